# make run: install what is missing, then the whole installation on the bundled demo recordings
# (a window where there is a display; headless with saved output where there is none).
# make test: install what is missing, then the test suite.

VENV       := .venv
PY         := $(VENV)/bin/python
OUT        := out/run
CONFIG     :=
DEMO       := app/demo_audio
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Real parts the tests use: EGL offscreen GL, an Xvfb display, PortAudio fed by a PulseAudio null sink, a
# browser (headless chromium, driven by Selenium) for the console, and voices (espeak-ng) for taught words.
APT_PACKAGES := python3-venv xvfb libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libgbm1 \
                libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins \
                chromium chromium-driver espeak-ng

.PHONY: run test install system-packages constraints benchmarks clean

install: system-packages $(VENV)/.installed

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

# Within constraints.txt: the versions the tests last passed with, the same on every machine and on every day.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# After upgrading a package on purpose and seeing `make test` pass: pin what is installed now.
constraints: install
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

run: install
ifeq ($(strip $(DISPLAY)$(WAYLAND_DISPLAY)),)
	$(PY) -m app.cli run --input $(DEMO) --headless --duration 75 --output $(OUT) --frame-log $(OUT)/frame_log.tsv $(if $(CONFIG),--config $(CONFIG))
else
	$(PY) -m app.cli run --input $(DEMO) $(if $(CONFIG),--config $(CONFIG))
endif

test: install
	$(PY) -m pytest -q

benchmarks: install
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) out *.egg-info
