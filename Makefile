# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install into it.
VENV ?= .venv
PY := $(VENV)/bin/python
# Torch first, from the pinned pair that imports together on these machines (see README, "Dependencies").
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e ".[test,demo,bench,ray,cloud]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/pytest -q

demo: $(STAMP)
	$(VENV)/bin/vidrd-data demo $(DEMO_DIR) --run
	rm -rf $(DEMO_DIR)/build  # the corpus was just rewritten: build it afresh, never resume an older vidrd's build
	$(VENV)/bin/vidrd-data build manifests/recipes/demo.toml --root $(DEMO_DIR) --out $(DEMO_DIR)/build --no-progress
	$(VENV)/bin/vidrd-train train configs/train_demo.toml --pretrained-model $(DEMO_DIR)/models/stable_diffusion \
		--manifests $(DEMO_DIR)/build/mixed --manifests $(DEMO_DIR)/manifests/images --output-dir $(DEMO_DIR)/train --no-progress
	$(VENV)/bin/vidrd-sample --model $(DEMO_DIR)/train/model --prompt "a red balloon rising into the sky" \
		--clips 3 --steps 10 --out $(DEMO_DIR)/samples --no-progress
	rm -rf $(DEMO_DIR)/eval  # the model was retrained: its videos must not resume an older model's
	$(VENV)/bin/vidrd-eval ucf101 --model $(DEMO_DIR)/train/model --ucf101 $(DEMO_DIR)/actions \
		--class-prompts $(DEMO_DIR)/actions/class_prompts.json --i3d $(DEMO_DIR)/models/extractors/i3d_torchscript.pt \
		--c3d $(DEMO_DIR)/models/extractors/c3d_ucf101.pt --cd-fvd $(DEMO_DIR)/models/videomae \
		-n 6 --steps 5 --resolution 64 --is-splits 2 --out $(DEMO_DIR)/eval --no-progress
	$(VENV)/bin/vidrd-eval clipsim $(DEMO_DIR)/eval/videos --clip-config $(DEMO_DIR)/models/open_clip/vidrd-tiny-ViT-16.json \
		--clip-checkpoint $(DEMO_DIR)/models/open_clip/open_clip_pytorch_model.bin -o $(DEMO_DIR)/eval/clipsim.json --no-progress
	head -n 2 configs/longvideo_prompts.txt > $(DEMO_DIR)/longvideo_prompts.txt  # long-video samplers side by side
	OMP_NUM_THREADS=1 $(VENV)/bin/vidrd-eval longvideo --model $(DEMO_DIR)/train/model --prompts $(DEMO_DIR)/longvideo_prompts.txt \
		--frames 4 --steps 2 --lengths 8,16 --height 16 --width 16 --fvd-windows 4,16 --resolution 32 --demo \
		--real $(DEMO_DIR)/actions --i3d $(DEMO_DIR)/models/extractors/i3d_torchscript.pt \
		--clip-config $(DEMO_DIR)/models/open_clip/vidrd-tiny-ViT-16.json \
		--clip-checkpoint $(DEMO_DIR)/models/open_clip/open_clip_pytorch_model.bin --out $(DEMO_DIR)/longvideo

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build *.egg-info
