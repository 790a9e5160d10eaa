"""The arm64 firmware image: signed slot updates, A/B slots and the boot counter."""
