"""Import a folder of images through the real upload widget (the browser's directory picker)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reliability.kit import png  # noqa: E402

pytestmark = pytest.mark.e2e


def test_folder_upload_becomes_a_dataset(app_url, page, shot, tmp_path):
    folder = tmp_path / "garden birds"
    for cls, colour in (("robin", (200, 60, 30)), ("blue tit", (40, 90, 220))):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            (folder / cls / f"{i}.png").write_bytes(png(colour, size=(24, 24), seed=i))
    (folder / "robin" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")

    page.goto(app_url)
    page.get_by_role("button", name="Start 3 runs").wait_for(timeout=90_000)
    page.get_by_text("Import your own images").click()
    page.locator(".st-key-import_source").get_by_role("radio", name="Folder").click()
    chooser = page.locator(".st-key-upload_folder input[type=file]")
    chooser.wait_for(state="attached", timeout=15_000)
    assert chooser.get_attribute("webkitdirectory") is not None  # a real directory picker
    chooser.set_input_files(folder)
    # the browser tells the server about a folder only once every file is in: Import before that has nothing
    page.get_by_text("7 files from 'garden birds' uploaded: press Import").wait_for(timeout=60_000)
    page.get_by_role("button", name="Import").click()
    message = page.get_by_text("imported 6 images in 2 classes as 'garden birds'", exact=False)
    message.wait_for(timeout=60_000)
    assert "; 1 file skipped: 1 not images — first: robin/broken.png" in message.inner_text()
    # the new dataset is selected and previewed (once the rerun has replaced the previous preview)
    page.get_by_text("6 images · 2 classes", exact=False).wait_for(timeout=30_000)
    page.wait_for_function("() => !document.body.innerText.includes('Pullover')", timeout=30_000)  # fashion-mnist gone
    page.get_by_text("blue tit").first.wait_for(timeout=30_000)
    picked = page.locator(".st-key-dataset").evaluate(
        "e => e.textContent + ' ' + [...e.querySelectorAll('input')].map(i => i.value).join(' ')")
    assert "garden birds — imported from" in picked, picked  # the dataset select
    shot("import-folder")
