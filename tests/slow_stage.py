"""A stage for runner tests: images, slowed down so a run can be killed part-way."""

import time

from vidrd_data.stages.images import ImageIngest


class SlowImages(ImageIngest):
    name = "slow-images"

    def process(self, row):
        time.sleep(float(self.params.get("delay", 0.02)))
        return super().process(row)
