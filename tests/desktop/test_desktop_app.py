"""The desktop example (examples/desktop) driven offscreen: generate, preview every step, save, play; cancel.

Qt runs with QT_QPA_PLATFORM=offscreen, so no display is needed. The window generates on a
worker thread; the test spins the Qt event loop (as a user's desktop would) until the
worker reports back, so every step's signal really crosses from the worker to the UI thread.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "desktop"
sys.path.insert(0, str(APP_DIR))

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

import desktop_app  # noqa: E402
from kinema.runtime.video.core import read_video

TIMEOUT_S = 300


@pytest.fixture(scope="module")
def app():
    return QApplication.instance() or QApplication([])


@pytest.fixture
def window(app, tiny_bundle):
    win = desktop_app.MainWindow(tiny_bundle, "a red ball bouncing")
    win.frames.setValue(5)
    win.width_box.setValue(32)
    win.height_box.setValue(32)
    win.show()
    yield win
    win.close()


def spin_until(app, done, timeout=TIMEOUT_S):
    end = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < end, "the window did not finish in time"
        app.processEvents()
        time.sleep(0.005)


def test_generate_preview_each_step_save_and_play(app, window, tmp_path):
    window.steps.setValue(3)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(window.job is not None))
    timer.start(10)
    window.generate_button.click()
    assert window.job is not None and not window.generate_button.isEnabled() and window.cancel_button.isEnabled()
    spin_until(app, lambda: window.job is None)
    timer.stop()

    assert window.status.text().startswith("done"), window.status.text()
    assert window.preview_steps == [0, 1, 2]  # one painted preview per step, in order
    assert not window.preview.pixmap().isNull() and window.progress.value() == 3
    assert sum(ticks) >= 3  # the UI thread kept running its timers while the worker generated
    video = window.video
    assert video.frames.shape == (5, 32, 32, 3)

    for ext in ("mp4", "gif"):
        written = window.save_to(tmp_path / f"clip.{ext}")
        assert written == tmp_path / f"clip.{ext}" and written.is_file()
        frames, fps = read_video(written)
        # saved at "auto" scale (short side >= 256: 8x) and lossy; back at 32x32 it stays close
        assert frames.shape[0] == 5 and frames.shape[1] == frames.shape[2] == 256, frames.shape
        small = frames.reshape(5, 32, 8, 32, 8, 3).mean(axis=(2, 4))
        assert np.abs(small - video.frames).mean() < 8.0, ext
    assert fps == pytest.approx(video.fps)
    # the player now plays the written file: its frames, advancing with the timer
    assert window.player.frames.shape == (5, 256, 256, 3)
    first = window.player.index
    spin_until(app, lambda: window.player.index != first, timeout=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif", "clip.mp4"]  # no temporary files left


def test_cancel_stops_within_one_step_and_writes_nothing(app, window, tmp_path):
    window.steps.setValue(50)
    seen, at_click = [], []

    def on_step(step, total, preview):
        seen.append(step)
        if step == 1:
            # Signals queue up on a busy machine: the worker may be past step 1 by now.
            at_click.append(window.job.last_step)
            window.cancel_button.click()

    window.generate_button.click()
    window.job.step.connect(on_step)
    spin_until(app, lambda: window.job is None)

    assert window.status.text() == "cancelled: nothing was kept"
    # at most one more step finishes after the click (the one in flight), and the run stops well short of 50
    assert seen[:2] == [0, 1] and at_click, seen
    assert max(seen) <= at_click[0] + 1 < 49, (seen, at_click)
    assert window.video is None and not window.save_button.isEnabled()
    assert window.save_to(tmp_path / "clip.mp4") is None
    assert list(tmp_path.iterdir()) == []
    assert window.generate_button.isEnabled()


def test_bad_settings_are_reported_without_starting(app, window):
    window.prompt.setText("   ")
    window.generate_button.click()
    assert window.job is None and "prompt is empty" in window.status.text()


def test_playing_leaks_no_references_and_keeps_the_pixels(app):
    import gc

    rgb = np.random.default_rng(0).integers(0, 256, (5, 20, 30, 3), dtype=np.uint8)
    player = desktop_app.Player()
    player.load(rgb, 8.0)
    player.timer.stop()
    gc.disable()
    try:
        before = sys.getrefcount(None)
        for _ in range(3000):  # a player loops for minutes; a binding that drops a None reference per call aborts
            player.advance()
        drift = sys.getrefcount(None) - before
    finally:
        gc.enable()
    assert abs(drift) <= 5, drift
    pixmap = desktop_app.to_pixmap(rgb[0], 30)
    img = pixmap.toImage().convertToFormat(pixmap.toImage().Format.Format_RGB888)
    back = np.frombuffer(img.constBits(), np.uint8).reshape(20, img.bytesPerLine())[:, :90].reshape(20, 30, 3)
    assert np.array_equal(back, rgb[0])
