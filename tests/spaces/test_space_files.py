"""The Space's front matter and requirements name what this repository installs."""

from __future__ import annotations

from pathlib import Path

import gradio
import yaml

import ica_hub

SPACE = Path(__file__).resolve().parents[2] / "spaces" / "ica_browser"


def test_the_front_matter_names_the_installed_gradio_and_the_app():
    text = (SPACE / "README.md").read_text(encoding="utf-8")
    front_matter = yaml.safe_load(text.split("---\n")[1])
    assert front_matter["sdk"] == "gradio"
    assert front_matter["sdk_version"] == gradio.__version__
    assert (SPACE / front_matter["app_file"]).is_file()


def test_the_requirements_name_the_wheel_of_this_version():
    lines = [line.strip() for line in (SPACE / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines == [f"./ica_hub-{ica_hub.__version__}-py3-none-any.whl"]
