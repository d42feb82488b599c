"""Training progress (atlas_t5x/train_progress.py): the bar on a terminal, INFO lines elsewhere."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

from atlas_t5x import train_progress

ROW = {"step": 40, "loss": 5.48213, "lr": 3e-3, "schedule_phase": "stable", "tokens_per_s": 84980.4, "mfu": 0.0431}


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_an_interactive_terminal_of_the_chief(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = train_progress.progress_bar(10, 2, is_chief=True)  # resumed at step 2
    assert not bar.disable
    bar.update(3)
    bar.close()
    assert "5/10" in terminal.getvalue()
    assert train_progress.progress_bar(10, 0, is_chief=False).disable  # other processes of a pod
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file or pipe
    assert train_progress.progress_bar(10, 0, is_chief=True).disable


def test_progress_line_has_step_loss_lr_throughput_mfu_and_eta():
    line = train_progress.format_progress(ROW, 200, eta_s=131.4)
    assert line == ("step 40/200 (20.0%): loss 5.4821 nats/token, lr 3.00e-03 (stable), 84,980 tokens/s, "
                    "MFU 4.3%, ETA 0:02:11")
    assert train_progress.format_eta(None) == "?" and train_progress.format_eta(3 * 3600 + 7) == "3:00:07"


def test_eta_is_the_remaining_steps_at_the_average_rate_since_start(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    reporter = train_progress.ProgressReporter(total_steps=100, start_step=20, is_chief=True)
    reporter._start_time = 1000.0
    assert reporter.eta_s(20, now=1001.0) is None  # no step yet
    assert reporter.eta_s(30, now=1005.0) == 35.0  # 10 steps in 5 s: 70 steps left take 35 s


def test_info_lines_outside_a_terminal_and_only_the_bar_inside(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with caplog.at_level(logging.INFO, logger="atlas_t5x.train_progress"):
        train_progress.ProgressReporter(200, 0, is_chief=True).report(ROW)
        train_progress.ProgressReporter(200, 0, is_chief=False).report(ROW)  # not process 0: silent
    assert [r.getMessage()[:22] for r in caplog.records] == ["step 40/200 (20.0%): l"]
    caplog.clear()
    monkeypatch.setattr(sys, "stderr", _Terminal())
    with caplog.at_level(logging.INFO, logger="atlas_t5x.train_progress"):
        reporter = train_progress.ProgressReporter(200, 0, is_chief=True)
        reporter.report(ROW)
        assert "loss=5.4821" in str(reporter.bar.postfix)
        reporter.close()
    assert caplog.records == []


def test_start_lines_say_what_was_restored():
    assert train_progress.describe_start("resumed", 300, 1000, 1_228_800, "/runs/a/checkpoints/300") == (
        "resumed from checkpoint /runs/a/checkpoints/300 at step 300/1000: 1,228,800 training tokens seen, "
        "optimizer state and data position restored")
    assert train_progress.describe_start("finetune", 0, 50, 0, "/runs/b/checkpoints/8").startswith(
        "finetuning from /runs/b/checkpoints/8: parameters restored; fresh optimizer")
    assert train_progress.describe_start("scratch", 0, 50, 0, None) == "starting from scratch: step 0 of 50"


def test_held_stderr_drops_only_tensorflows_pre_init_lines(capfd):
    with train_progress._held_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                    b"I0000 00:00:1796220650.332610   14854 port.cc:153] oneDNN custom operations are on.\n"
                    b"E0000 00:00:1796220650.3 cuda_dnn.cc:1] a real error\n"
                    b"W1202 14:00:00.1 x.py:1] a warning\n")
    assert capfd.readouterr().err == "E0000 00:00:1796220650.3 cuda_dnn.cc:1] a real error\nW1202 14:00:00.1 x.py:1] a warning\n"


def test_command_line_logging_imports_tensorflow_without_its_startup_chatter():
    script = ("import sys\n"
              "from absl import logging\n"
              "logging.use_absl_handler()\n"
              "logging.set_verbosity(logging.INFO)\n"  # as atlas-train does
              "from atlas_t5x import train_progress\n"
              "train_progress.quiet_library_logs()\n"
              "import tensorflow\n"
              "logging.info('library line')\n"
              "logging.warning('library warning')\n"
              "train_progress.log.info('atlas line')\n"
              "print('imported', tensorflow.__name__, file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert not [l for l in lines if l.startswith(("I0000", "WARNING: All log messages"))], proc.stderr
    assert "library line" not in proc.stderr  # a library's INFO record (here: this script's, outside atlas_t5x)
    assert "library warning" in proc.stderr and "atlas line" in proc.stderr and "imported tensorflow" in proc.stderr
