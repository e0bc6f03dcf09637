"""Drive one notebook in JupyterLab from Playwright: open, run all, watch the kernel, move widgets.

Everything the tests learn about the kernel comes from ``window.jupyterapp`` (the server exposes it) and
from a listener on the notebook's ``sessionContext.iopubMessage`` signal, installed before any cell runs.
That listener sees every ``error`` message and every ``stderr`` stream the kernel publishes, including those
of widget callbacks: an exception in a callback that is not inside an ``Output`` widget never reaches a cell
(JupyterLab sends it to the log console only), and ipykernel's comm handler reports an exception raised by a
trait observer as a logged traceback on stderr, not as an ``error`` message. Both count as failures.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# stderr text that means an exception happened (warnings and progress bars are not failures)
STDERR_FAILURE = re.compile(r"Traceback \(most recent call last\)|Exception in comm_msg|Error in callback")

_FIND_PANEL = """
(path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return false;
  const panel = app.shell.currentWidget;
  return !!(panel && panel.context && panel.context.path === path && panel.sessionContext);
}
"""

_INSTALL_LISTENER = """
async () => {
  const panel = window.jupyterapp.shell.currentWidget;
  await panel.context.ready;
  await panel.sessionContext.ready;
  const log = {count: 0, errors: [], stderr: []};
  window.__dpoKernelLog = log;
  panel.sessionContext.iopubMessage.connect((_, msg) => {
    log.count += 1;
    const type = msg.header.msg_type;
    const parent = (msg.parent_header || {}).msg_type || '';
    if (type === 'error') {
      log.errors.push({parent, text: msg.content.ename + ': ' + msg.content.evalue + '\\n'
                       + (msg.content.traceback || []).join('\\n')});
    } else if (type === 'stream' && msg.content.name === 'stderr') {
      log.stderr.push({parent, text: msg.content.text});
    }
  });
  return panel.sessionContext.kernelDisplayName;
}
"""

_STATE = """
() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  let running = 0, pending = 0, errorOutputs = [];
  for (const cell of panel.content.model.cells) {
    if (cell.type !== 'code') continue;
    if (cell.executionState === 'running') running += 1;
    if (cell.sharedModel.getSource().trim() && cell.executionCount === null) pending += 1;
    for (const out of cell.outputs.toJSON()) {
      if (out.output_type === 'error') errorOutputs.push(out.ename + ': ' + out.evalue);
    }
  }
  const log = window.__dpoKernelLog;
  return {status: kernel ? kernel.status : 'none', running, pending, errorOutputs,
          count: log.count, errors: log.errors, stderr: log.stderr};
}
"""

# One keyboard step on a slider's handle, timed in the page: from the keydown to the moment the readout shows
# new text and the figure (an <img>) has a new source that finished decoding. null when nothing changed in 5 s.
_TIMED_STEP = """
([slider, readout, figure, key]) => new Promise((resolve) => {
  const handle = document.querySelector(slider + ' .noUi-handle');
  const text = document.querySelector(readout);
  // the figure: the images in the output of the cell that holds `figure` (as _FIGURES reads them)
  const anchor = figure ? document.querySelector(figure) : null;
  const area = anchor ? (anchor.closest('.jp-Cell') || document) : null;
  const images = () => area ? Array.from(area.querySelectorAll('.jp-OutputArea img')) : [];
  const textBefore = text.innerText, srcBefore = images().map(i => i.src).join(' ');
  let done = false;
  const finish = (value) => { if (!done) { done = true; observer.disconnect(); resolve(value); } };
  const check = () => {
    const now = images();
    const imageMoved = !area || (now.map(i => i.src).join(' ') !== srcBefore
                                 && now.every(i => i.complete && i.naturalWidth > 0));
    if (text.innerText !== textBefore && imageMoved) finish({ms: performance.now() - start, text: text.innerText});
  };
  const observer = new MutationObserver(check);
  observer.observe(text, {subtree: true, childList: true, characterData: true});
  if (area) {
    observer.observe(area, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
    area.addEventListener('load', check, true);  // an image finished decoding (load does not bubble: capture)
  }
  setTimeout(() => finish(null), 5000);
  handle.focus();
  const start = performance.now();
  handle.dispatchEvent(new KeyboardEvent('keydown', {key, bubbles: true, cancelable: true}));
})
"""

_FIGURES = """
(selector) => {
  const anchor = document.querySelector(selector);
  if (!anchor) return null;
  const area = anchor.closest('.jp-Cell') || document;
  return Array.from(area.querySelectorAll('.jp-OutputArea img, .jp-OutputArea svg.main-svg'))
    .map(el => el.tagName === 'IMG' ? {src: el.src, width: el.naturalWidth} : {src: el.outerHTML, width: 1});
}
"""


@dataclass
class KernelReport:
    """What the kernel published: ``failures`` are exceptions (error messages, tracebacks on stderr)."""

    failures: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @classmethod
    def from_state(cls, state: dict) -> KernelReport:
        failures = [f"[{e['parent']}] {ANSI.sub('', e['text'])}" for e in state["errors"]]
        failures += [f"[cell output] {text}" for text in state["errorOutputs"]]
        stderr = [ANSI.sub("", s["text"]) for s in state["stderr"]]
        failures += [
            f"[stderr of {s['parent']}] {text}"
            for s, text in zip(state["stderr"], stderr, strict=True)
            if STDERR_FAILURE.search(text)
        ]
        return cls(failures=failures, stderr=stderr)


class NotebookPage:
    """A notebook open in JupyterLab in one Playwright page, with a kernel-message listener installed."""

    def __init__(self, page, server, path: str, timeout: float = 300.0):
        self.page = page
        self.server = server
        self.path = path
        self.timeout = timeout
        self.page_errors: list[str] = []  # uncaught JavaScript errors, filled by the fixture's listener
        self._mark = 0  # iopub message count just before the last action (see settle)

    def open(self) -> NotebookPage:
        self.page.goto(self.server.lab_url(self.path), wait_until="domcontentloaded")
        self.page.wait_for_function(_FIND_PANEL, arg=self.path, timeout=120_000, polling=250)
        self.kernel_name = self.page.evaluate(_INSTALL_LISTENER)
        return self

    def _before_action(self) -> None:
        self._mark = self.state()["count"]

    def state(self) -> dict:
        return self.page.evaluate(_STATE)

    def report(self) -> KernelReport:
        report = KernelReport.from_state(self.state())
        report.failures += [f"[page error] {error}" for error in self.page_errors]
        return report

    def settle(self, quiet: float = 0.75, timeout: float | None = None, expect_message: bool = True) -> dict:
        """Wait until the kernel is idle, no cell runs and no iopub message arrived for ``quiet`` seconds.

        With ``expect_message`` the wait first requires an iopub message newer than the last action (a
        widget action always makes the kernel busy at least once), so a check never passes before the
        kernel reacted — and a kernel that reacted before this call started is not waited for twice.
        """
        deadline = time.monotonic() + (timeout or self.timeout)
        quiet_since, last_count = None, None
        while time.monotonic() < deadline:
            state = self.state()
            reacted = not expect_message or state["count"] > self._mark
            calm = state["status"] == "idle" and state["running"] == 0 and reacted
            if calm and state["count"] == last_count:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= quiet:
                    return state
            else:
                quiet_since = None
            last_count = state["count"]
            time.sleep(0.1)
        raise TimeoutError(f"{self.path}: kernel still busy after {timeout or self.timeout:.0f} s: {state}")

    def run_all(self) -> KernelReport:
        """Run every cell (Lab's own command) and wait until all ran or one failed."""
        self._before_action()
        self.page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        deadline = time.monotonic() + self.timeout
        while True:
            state = self.settle(timeout=max(1.0, deadline - time.monotonic()))
            report = self.report()
            # Lab stops a run-all at the first error: the remaining cells then never get a count.
            if state["pending"] == 0 or report.failures:
                return report
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path}: {state['pending']} cells never ran")

    # --- widgets -------------------------------------------------------------------------------------
    def widget(self, selector: str):
        locator = self.page.locator(selector)
        locator.first.wait_for(state="visible", timeout=30_000)
        return locator.first

    def slider_value_text(self, slider: str) -> str:
        return self.widget(f"{slider} .widget-readout").inner_text().strip()

    def press_slider_key(self, slider: str, key: str = "ArrowRight", times: int = 1) -> None:
        """Focus the slider's handle and press ``key`` (noUiSlider moves one step per press)."""
        handle = self.widget(f"{slider} .noUi-handle")
        self._before_action()
        handle.focus()
        for _ in range(times):
            handle.press(key)

    def timed_slider_step(
        self, slider: str, readout: str, figure: str | None, key: str = "ArrowRight"
    ) -> float:
        """Press ``key`` once on the slider's handle; return the milliseconds until ``readout`` shows new text
        and the ``figure`` image (if any) has been redrawn — the latency a reader feels. Fails after 5 s."""
        self._before_action()
        result = self.page.evaluate(_TIMED_STEP, [slider, readout, figure, key])
        return None if result is None else result["ms"]

    def click_button(self, selector: str) -> None:
        button = self.widget(selector)
        self._before_action()
        button.click()

    def text(self, selector: str) -> str:
        return self.widget(selector).inner_text().strip()

    def figures(self, anchor: str) -> list[dict]:
        """The images in the output of the cell that holds ``anchor``: hashed sources and decoded widths."""
        items = self.page.evaluate(_FIGURES, anchor) or []
        return [{"hash": hashlib.sha1(i["src"].encode()).hexdigest(), "width": i["width"]} for i in items]

    def screenshot(self, anchor: str, path) -> None:
        """Screenshot of the output (the widget, without prompt and cell border) that holds ``anchor``."""
        self.page.evaluate("() => document.activeElement && document.activeElement.blur()")  # no focus ring
        self.settle(expect_message=False)  # blurring a slider's readout may resend its value
        output = self.page.locator(".jp-OutputArea-output", has=self.page.locator(anchor)).last
        # a margin inside the element, so the widget's text does not touch the picture's edge
        output.evaluate("el => { el.dataset.dpoPadding = el.style.padding; el.style.padding = '12px'; }")
        output.screenshot(path=str(path))
        output.evaluate("el => { el.style.padding = el.dataset.dpoPadding; }")

    def shutdown_kernel(self) -> None:
        self.page.evaluate(
            "async () => { await window.jupyterapp.shell.currentWidget.sessionContext.shutdown(); }"
        )
