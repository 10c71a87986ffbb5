"""The command line: real subcommands with their own options, run as the default, and the end-of-run summary."""
import pandas as pd
import pytest
import torch
import yaml

from unlearnbench.cli import main, with_default_command
from unlearnbench.report.run_summary import format_summary

from conftest import SMALL_MNIST, write_grid


def help_text(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_the_commands_and_names_the_default(capsys):
    text = help_text(["--help"], capsys)
    for command in ("run", "list", "report", "tune"):
        assert f"    {command} " in text
    assert "run is the default command" in text and "COMMAND --help" in text
    assert "--workers" not in text and "--grid GRID" not in text


RUN_ONLY = ["--dry-run", "--retry-failed", "--no-report"]
GRID_OPTIONS = ["--grid", "--only", "--methods", "--device", "--data-root", "--download", "--results-dir", "--cache-dir",
                "--launcher", "--workers", "--gpus", "--threads", "--slurm", "--quiet", "--plugins", "--out"]


@pytest.mark.parametrize("command,present,absent", [
    ("run", GRID_OPTIONS + RUN_ONLY, ["RUN_DIR"]),
    ("tune", GRID_OPTIONS, RUN_ONLY + ["RUN_DIR"]),
    ("report", ["RUN_DIR", "--out"], [o for o in GRID_OPTIONS + RUN_ONLY if o != "--out"]),
    ("list", ["--plugins"], [o for o in GRID_OPTIONS + RUN_ONLY if o != "--plugins"] + ["RUN_DIR"]),
])
def test_each_command_help_lists_its_own_options_only(command, present, absent, capsys):
    text = help_text([command, "--help"], capsys)
    assert text.startswith(f"usage: run_bench.py {command} ")
    for option in present:
        assert option in text, f"{command} --help lacks {option}"
    for option in absent:
        assert option not in text, f"{command} --help has {option}"
    # tune refuses --only forget_class (its studies score the tuning: section's classes): its help does not offer it
    assert ("forget_class" in text) == (command == "run")


def test_help_and_the_dataset_registry_load_what_they_need_only():
    """`--help` does not import torch (it took ~4 s when the package's __init__ imported everything); the dataset
    registry imports the dataset modules at its first lookup, so no caller has to import them for their effect."""
    import subprocess
    import sys
    script = ("import sys; from unlearnbench.cli import main\n"
              "for argv in (['--help'], ['run', '--help'], ['tune', '--help']):\n"
              "    try: main(argv)\n"
              "    except SystemExit: pass\n"
              "assert 'torch' not in sys.modules, 'torch imported'\n"
              "from unlearnbench.data import DATASETS\n"
              "print(DATASETS.names()); print(DATASETS.get('mnist5k').description)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    names = done.stdout.splitlines()[-2]
    assert all(name in names for name in ("cifar10", "mnist5k", "imagenet", "fashion-mnist"))


def test_no_command_word_means_run(tmp_path, capsys):
    assert with_default_command([]) == ["run"]
    assert with_default_command(["--grid", "smoke"]) == ["run", "--grid", "smoke"]
    assert with_default_command(["tune", "--grid", "smoke"]) == ["tune", "--grid", "smoke"]
    assert with_default_command(["-h"]) == ["-h"]
    assert help_text(["--grid", "smoke", "--help"], capsys).startswith("usage: run_bench.py run ")

    argv = ["--grid", str(write_grid(tmp_path)), "--dry-run", "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    implicit = capsys.readouterr().out
    assert "3 cells to run" in implicit
    assert main(["run", *argv]) == 0
    assert capsys.readouterr().out == implicit


@pytest.mark.parametrize("argv", [
    ["report"],                                    # report needs a run folder
    ["list", "--grid", "smoke"],                   # list takes only --plugins
    ["tune", "--dry-run"],                         # a run option
    ["report", "somewhere", "--workers", "2"],     # a launch option
    ["--grid", "smoke", "extra"],                  # run takes no positional arguments
    ["--workers", "two"],                          # not a number
])
def test_options_of_other_commands_are_argparse_errors(argv, capsys):
    """One line naming the command and where its options are listed, without argparse's usage block."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    command = argv[0] if argv[0] in ("report", "list", "tune") else "run"
    err = capsys.readouterr().err
    assert err.startswith(f"run_bench.py {command}: error: ") and len(err.splitlines()) == 1
    assert err.rstrip().endswith(f"(`run_bench.py {command} --help` lists the options).")


def test_user_errors_still_print_one_sentence(tmp_path, capsys):
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--out" in err and len(err.splitlines()) == 1
    (tmp_path / "file").write_text("")
    (tmp_path / "empty").mkdir()
    for folder, state in [("nowhere", "No such folder:"), ("file", "Not a folder:"), ("empty", "No records.csv in")]:
        assert main(["report", str(tmp_path / folder)]) == 2
        assert capsys.readouterr().err.strip() == f"error: {state} {tmp_path / folder}; pass a run folder made by " \
                                                  f"run_bench.py."


def records_frame() -> pd.DataFrame:
    rows = []

    def add(method, seed, forget_class, split, metric, value, params="{}", backbone="vgg16-w0.0625"):
        rows.append(dict(dataset="mnist5k", backbone=backbone, method=method, params=params, seed=seed,
                         forget_class=forget_class, split=split, metric=metric, value=value))

    for c, (r, f) in enumerate([(0.96, 0.95), (0.94, 0.97)]):
        add("original", 0, c, "test", "acc_retain", r)
        add("original", 0, c, "test", "acc_forget", f)
    for c, (r, f, z, s) in enumerate([(0.90, 0.0, 0.50, 2.0), (0.80, 0.10, 0.70, 3.0)]):
        add("retrain", 0, c, "test", "acc_retain", r)
        add("retrain", 0, c, "test", "acc_forget", f)
        add("retrain", 0, c, "test", "zrf", z)
        add("retrain", 0, c, "train", "acc_retain", 0.10)     # another split: not in the summary
        add("retrain", 0, c, "all", "unlearn_seconds", s)
        add("retrain", 1, c, "all", "unlearn_seconds", s + 2)  # seed 1: 9 s in all, seed 0: 5 s → 7 s
    for c in (0, 1):
        add("wfnet", 0, c, "test", "acc_retain", 0.925)
        add("wfnet", 0, c, "test", "acc_forget", 0.02)
    add("wfnet", 0, None, "all", "unlearn_seconds", 4.25)      # one round for all classes
    add("original", 0, 0, "test", "acc_retain", 0.5, backbone="vit_tiny")
    frame = pd.DataFrame(rows)
    frame["forget_class"] = frame["forget_class"].astype("Int64")
    return frame


def test_summary_has_the_columns_and_numbers(capsys):
    lines = format_summary(records_frame()).splitlines()
    header = lines[0].split()
    assert header == ["dataset", "backbone", "method", "Acc_r", "%", "Acc_f", "%", "ZRF", "×100", "unlearn", "s"]
    table = {tuple(line.split()[1:3]): line.split()[3:] for line in lines[1:5]}
    assert table[("vgg16-w0.0625", "original")] == ["95.0", "96.0", "—", "—"]
    assert table[("vgg16-w0.0625", "retrain")] == ["85.0", "5.0", "60.0", "7.0"]
    assert table[("vgg16-w0.0625", "wfnet")] == ["92.5", "2.0", "—", "4.2"]
    assert table[("vit_tiny", "original")] == ["50.0", "—", "—", "—"]
    assert [line.split()[2] for line in lines[1:5]] == ["original", "retrain", "wfnet", "original"]
    assert len({len(line) for line in lines[:5]}) == 1  # aligned columns, numbers right-aligned
    retrain = next(line for line in lines if " retrain " in line)
    assert retrain.index("85.0") + 4 == lines[0].index("Acc_r %") + 7
    assert retrain.index("60.0") + 4 == lines[0].index("ZRF ×100") + 8
    assert "Test split" in lines[-1]
    assert format_summary(records_frame().iloc[0:0]) == ""


def test_summary_names_parameter_settings_when_a_method_has_several():
    frame = records_frame()
    sweep = frame[frame.method == "wfnet"].assign(params='{"lr": 0.1}', value=lambda f: f["value"] / 2)
    text = format_summary(pd.concat([frame.assign(params=frame["params"].where(frame.method != "wfnet", '{"lr": 0.01}')),
                                     sweep]))
    assert "wfnet (lr=0.01)" in text and "wfnet (lr=0.1)" in text and "retrain (" not in text


def test_run_prints_the_summary_and_the_report_index(tmp_path, monkeypatch, capsys):
    from unlearnbench import runner

    run_dir = tmp_path / "run"
    (run_dir / "report").mkdir(parents=True)
    (run_dir / "report" / "index.md").write_text("# report\n")
    monkeypatch.setattr(runner, "run", lambda grid, options, launch, planned: runner.RunResult(
        run_dir, records_frame(), [], 5, 0))
    assert main(["--grid", str(write_grid(tmp_path)), "--device", "cpu", "--workers", "1",
                 "--out", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "Acc_r %" in out and "retrain" in out and "85.0" in out
    assert f"report: {run_dir / 'report' / 'index.md'}" in out
    assert "5 cells computed" in out
    monkeypatch.setattr(runner, "run", lambda grid, options, launch, planned: runner.RunResult(
        run_dir, records_frame(), [], 0, 5, report_error="x is not a readable WF-Net α file"))
    # every cell done, but not the report: scripts see it (it exited 0)
    assert main(["--grid", str(write_grid(tmp_path)), "--device", "cpu", "--workers", "1", "--out", str(run_dir)]) == 1
    out = capsys.readouterr().out  # the index.md there is the earlier run's: not offered as this run's report
    assert (f"report failed: x is not a readable WF-Net α file (details in {run_dir / 'log.txt'}); once mended, "
            f"`run_bench.py report {run_dir}` writes it") in out
    assert "report: " not in out
    seen = []
    monkeypatch.setattr(runner, "run", lambda grid, options, launch, planned: seen.append(options.report) or
                        runner.RunResult(run_dir, records_frame(), [], 0, 5))
    assert main(["--grid", str(write_grid(tmp_path)), "--device", "cpu", "--workers", "1", "--out", str(run_dir),
                 "--no-report"]) == 0
    assert seen == [False]  # and the report/ there, an earlier run's, is not offered as this one's
    assert (f"report: not written (--no-report) (the report/ there is an earlier run's); `run_bench.py report "
            f"{run_dir}` writes it") in capsys.readouterr().out


def test_the_printed_summary_leaves_out_a_cell_that_failed_as_the_report_does(tmp_path, monkeypatch, capsys):
    """A re-run into a folder recomputed a cell and it failed: records.csv keeps the earlier run's rows, which the
    report leaves out. Before, the summary printed after the run still averaged them in as current results (here
    retrain's class 0: Acc_r 85.0 where its one current class gives 80.0)."""
    from unlearnbench import runner
    from unlearnbench.store import FAILURE_COLUMNS

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    failed = {"dataset": "mnist5k", "backbone": "vgg16-w0.0625", "method": "retrain", "params": "{}", "seed": 0,
              "forget_class": 0, "status": "failed", "reason": "boom", "traceback": ""}

    def summary_line(failures: list[dict]) -> list[str]:
        monkeypatch.setattr(runner, "run", lambda grid, options, launch, planned: runner.RunResult(
            run_dir, records_frame(), failures, 1, 0))
        assert main(["--grid", str(write_grid(tmp_path)), "--device", "cpu", "--out", str(run_dir)]) == (
            1 if failures else 0)
        return next(line.split()[3:] for line in capsys.readouterr().out.splitlines() if " retrain " in line)

    assert summary_line([]) == ["85.0", "5.0", "60.0", "7.0"]
    assert summary_line([failed]) == ["80.0", "10.0", "70.0", "6.0"]  # seed 0: 3 s; seed 1: class 0's 4 s and 5 s
    pd.DataFrame([failed], columns=FAILURE_COLUMNS).to_csv(run_dir / "failures.csv", index=False)
    assert summary_line([]) == ["80.0", "10.0", "70.0", "6.0"]  # failed in an earlier run, as failures.csv keeps


def test_the_plan_estimates_training_images_from_the_dataset_registry(tmp_path, capsys):
    # mnist5k registers 4,000 training images; less the 10 % validation cut that is 3,600 per epoch, and the plan
    # trains one original and two retrained models for 10 epochs: 3 × 10 × 3,600 = 108,000 images
    grid = write_grid(tmp_path, recipe={"epochs": 10})
    assert main(["--grid", str(grid), "--dry-run", "--cache-dir", str(tmp_path / "c")]) == 0
    assert "cost estimate: ~0.11 M training images" in capsys.readouterr().out


def test_a_method_the_named_tuning_result_lacks_is_warned_about(tmp_path, capsys):
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(yaml.safe_dump({"tuned": {"mnist5k": {"vgg16-w0.0625": {"finetune": {"params": {"lr": 0.01}}}}}}))
    grid = write_grid(tmp_path, methods=["original", "finetune", "salun"], tuned=str(tuned))
    assert main(["--grid", str(grid), "--dry-run", "--cache-dir", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert "hold none for salun (1 dataset × backbone group): they run with their defaults" in err
    assert "finetune" not in err and "original" not in err and f"--only method=salun --out {tmp_path} --cache-dir {tmp_path / 'c'}`." in err
    grid = write_grid(tmp_path, methods=["original", "finetune", "salun"], tuned=str(tmp_path))  # its tune folder
    assert main(["--grid", str(grid), "--dry-run", "--cache-dir", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err  # (was --out reports/tuning/<the folder's path>, then a copy into the package)
    assert f"--only method=salun --out {tmp_path} --cache-dir {tmp_path / 'c'}`." in err and "copy" not in err
    grid = write_grid(tmp_path, methods=["original", "salun"], tuned="smoke",  # shipped: tune into its report folder
                      backbones=[{"name": "resnet18", "width": 0.0625}])
    assert main(["--grid", str(grid), "--dry-run", "--cache-dir", str(tmp_path / "c")]) == 0
    assert (f"--only method=salun --out reports/tuning/smoke --cache-dir {tmp_path / 'c'}`, then copy "
            f"reports/tuning/smoke/tuned.yaml to unlearnbench/configs/tuned/smoke.yaml.") in capsys.readouterr().err
    grid = write_grid(tmp_path, methods=["original", "finetune"], tuned=str(tuned))
    assert main(["--grid", str(grid), "--dry-run", "--cache-dir", str(tmp_path / "c")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_the_re_tune_hint_pastes_as_a_tune_command_of_the_methods_the_run_ran(tmp_path, shared_cache, capsys):
    """Before: a run given --methods printed a tune command without them (pasted: '--only method=salun matches no
    cell of grid'), a --retry-failed run named its grid by its `name:` (pasted: 'Unknown grid'), and neither named
    the run's --data-root (pasted: 'Every study ... is skipped': the dataset not found)."""
    from test_streaming import write_tree

    import re
    import shlex

    from unlearnbench.cli import _options, _tune_grid, build_parser, parse_pairs
    from unlearnbench.planning import plan

    def tuned_by_pasting(err: str) -> set[str]:
        """The methods the printed `run_bench.py tune ...` plans, parsed and planned as `tune` does."""
        words = shlex.split(re.search(r"Add them with `run_bench.py (tune [^`]*)`", err).group(1))
        args = build_parser().parse_args(words)
        grid = _tune_grid(args)
        options, _ = _options(args, words, grid, args.data_root, parse_pairs(args.only, "--only", join_repeats=True))
        return {cell.method for cell in plan(grid, options).cells}

    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(yaml.safe_dump({"tuned": {"imagefolder": {"vgg16-w0.0625": {
        "finetune": {"params": {"lr": 0.01}}}}}}))
    grid = write_grid(tmp_path, "my grid.yaml", name="hinted", datasets=["imagefolder"],
                      methods=["original", "finetune"], tuned=str(tuned))
    root = write_tree(tmp_path / "my data", classes=3, train=10, test=4, size=16)
    run = ["--grid", str(grid), "--methods", "original,salun", "--only", "forget_class=0", "--cache-dir",
           str(shared_cache), "--out", str(tmp_path / "run"), "--data-root", str(root)]
    assert main([*run, "--dry-run"]) == 0
    assert tuned_by_pasting(capsys.readouterr().err) == {"salun"}
    assert main([*run, "--quiet", "--no-report"]) == 0
    capsys.readouterr()
    assert main(["--retry-failed", "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert f"--grid {shlex.quote(str(tmp_path / 'run' / 'config.yaml'))}" in err  # the grid the run ran
    assert tuned_by_pasting(err) == {"salun"}
    assert f"--data-root {shlex.quote(str(root))} --cache-dir {shared_cache}" in err  # as its config.yaml records


def test_methods_flag_replaces_the_grid_methods_keeping_their_overrides(tmp_path, capsys):
    """--methods all runs every discovered method; a list runs those, a listed one keeping the grid's parameter
    overrides; an unknown name or an empty list is one error sentence."""
    from unlearnbench.discovery import discover
    from unlearnbench.grid import MethodEntry, load_grid, with_methods

    grid = write_grid(tmp_path, methods=["original", {"name": "finetune", "params": {"steps": 7}}])
    assert main(["--grid", str(grid), "--methods", "all", "--dry-run", "--cache-dir", str(tmp_path / "c")]) == 0
    plan_text = capsys.readouterr().out
    assert all(f"  {m} " in plan_text for m in discover()[0])
    chosen = with_methods(load_grid(str(grid)), "finetune, retrain")
    assert chosen.methods == [MethodEntry("finetune", {"steps": 7}), MethodEntry("retrain")]
    for extra, message in ((["retrain,nosuch"], "Unknown method 'nosuch'"), ([" , "], "--methods expects 'all'"),
                           (["original,,retrain"], "--methods expects 'all' or comma-separated method names such as "
                                                   "wfnet,retrain, got 'original,,retrain'."),
                           (["all", "--retry-failed"], "--methods cannot be combined with --retry-failed")):
        assert main(["--grid", str(grid), "--methods", *extra, "--dry-run", "--cache-dir", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert main(["--grid", str(grid), "--slurm", "partition=x", "--dry-run", "--cache-dir", str(tmp_path / "c")]) == 2
    assert "--slurm partition=x sets a Slurm option, but the launcher is local" in capsys.readouterr().err
    # --grid with --retry-failed, which reruns the folder's recorded grid: refused (before: ignored silently)
    assert main(["--retry-failed", "--grid", str(grid), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith("error: --grid cannot be combined with --retry-failed")


SLEEPER_PLUGIN = """
import os
import time
from unlearnbench import Unlearner


class Sleeper(Unlearner):
    name = "sleeper"

    def unlearn(self, task):
        with open(os.environ["SLEEPER_PID"] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(os.environ["SLEEPER_PID"] + ".tmp", os.environ["SLEEPER_PID"])
        time.sleep(300)
"""


@pytest.mark.parametrize("terminal", [False, True, None],
                         ids=["SIGTERM to the command", "Ctrl-C in a terminal", "SIGKILL to the command"])
def test_ctrl_c_during_a_run_is_one_line_exit_130_and_ends_the_workers(tmp_path, shared_cache, terminal):
    """SIGINT while a worker runs a cell: one line on stderr (once a KeyboardInterrupt traceback), exit code 130,
    and no worker left running, sent as a terminal sends Ctrl-C, to the whole process group, pressed three times
    within 50 ms (before: the worker's traceback, and loky's from the main process's shutdown, whose `pgrep` the
    second one killed). SIGTERM, sent to the command alone (only the command can end the worker), ends it the same
    way with exit code 143 (before: killed at once, loky's warning of leaked semaphores its only words). SIGKILL to
    the command alone: the worker exits within a second (before: it finished its job, then idled for 5 minutes)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "sleeper.py").write_text(SLEEPER_PLUGIN)
    pid_file = tmp_path / "worker.pid"
    argv = [sys.executable, str(Path(__file__).resolve().parent.parent / "run_bench.py"), "--grid",
            str(write_grid(tmp_path, methods=["sleeper"], forget_classes=[0])), "--plugins", str(tmp_path / "plugins"),
            "--out", str(tmp_path / "run"), "--cache-dir", str(shared_cache), "--device", "cpu", "--quiet",
            "--workers", "1"]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SLEEPER_PID": str(pid_file)}, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # not inherited ignored
    deadline = time.time() + 300
    while not pid_file.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    for pause in (0.002, 0.05, 0) if terminal else (0,):
        os.killpg(proc.pid, signal.SIGINT) if terminal else proc.send_signal(
            signal.SIGKILL if terminal is None else signal.SIGTERM)
        time.sleep(pause)
    _, err = proc.communicate(timeout=60)
    if terminal is not None:
        said, code = ("interrupted", 130) if terminal else ("terminated", 143)
        assert proc.returncode == code and err == (f"{said}; finished cells are kept in the cache {shared_cache}; "
                                                   f"run the same command again to resume.\n"), err
    deadline = time.time() + 10

    def running(pid: int) -> bool:
        status = Path(f"/proc/{pid}/status")
        return status.exists() and "\nState:\tZ" not in status.read_text()

    while running(worker) and time.time() < deadline:
        time.sleep(0.1)
    assert worker != proc.pid and not running(worker)


def test_ctrl_c_during_report_is_one_line_and_main_gives_its_handler_back(tmp_path, monkeypatch, capsys):
    """Before: Ctrl-C during `report` (or `list`) ended in an AttributeError traceback (no cache to name)."""
    import os
    import signal
    import time

    import unlearnbench.report as report

    def interrupted(*_):
        os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT: through the command's handler
        time.sleep(5)

    monkeypatch.setattr(report, "write_report", interrupted)
    assert main(["report", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "interrupted.\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # an in-process caller's, as it was


def test_sigterm_is_handled_where_sigint_is_ignored_and_the_handlers_are_given_back(tmp_path):
    """A script's background job starts with SIGINT ignored: SIGTERM was then left to kill the command at once
    (its own process here, so that a missing handler cannot kill the test run)."""
    import subprocess
    import sys

    script = f"""
import os, signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
import unlearnbench.report as report
from unlearnbench.cli import main
def terminated(*_):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
report.write_report = terminated
code = main(["report", {str(tmp_path)!r}])
print(code, signal.getsignal(signal.SIGINT) == signal.SIG_IGN, signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "143 True True\n", "terminated.\n"), done


def test_only_drops_empty_list_items_as_methods_does_and_needs_one_value():
    from unlearnbench.cli import parse_pairs
    from unlearnbench.errors import UserError

    assert parse_pairs(["method=retrain,", " seed = ,0, ,1", "method=,wfnet"], "--only", join_repeats=True) == {
        "method": "retrain,wfnet", "seed": "0,1"}
    assert parse_pairs(["partition=a,b"], "--slurm") == {"partition": "a,b"}
    for item in ("method=,", "method= ", " =x"):
        with pytest.raises(UserError, match=f"--only expects KEY=VALUE, got '{item}'"):
            parse_pairs([item], "--only", join_repeats=True)


def test_retry_failed_on_a_config_whose_grid_has_no_name_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    grid = yaml.safe_load(write_grid(tmp_path).read_text())
    del grid["name"]
    (run / "config.yaml").write_text(yaml.safe_dump({"grid": grid, "device": "cpu"}))
    assert main(["--retry-failed", "--out", str(run), "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "config.yaml has no 'name'" in err and "'None'" not in err and len(err.splitlines()) == 1


def test_retry_failed_reads_the_run_s_folders_back_from_any_directory(tmp_path, monkeypatch, capsys):
    """config.yaml recorded --cache-dir and --plugins as typed: read back from another directory, a relative one
    named another folder (the plugin folder did not exist; a new ./cache planned every finished cell again)."""
    from conftest import SMALL_MNIST

    (tmp_path / "plugins").mkdir()
    grid = write_grid(tmp_path, methods=["original"], metrics=["accuracy"], datasets=[SMALL_MNIST],
                      forget_classes=[0])
    monkeypatch.chdir(tmp_path)
    assert main(["--grid", str(grid), "--out", "run", "--cache-dir", "cache", "--plugins", "plugins", "--quiet",
                 "--no-report", "--workers", "0"]) == 0
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (config["cache_dir"], config["plugins"]) == (str(tmp_path / "cache"), [str(tmp_path / "plugins")])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["--retry-failed", "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    assert "cached cells: 1 of 1" in capsys.readouterr().out
    assert not (tmp_path / "elsewhere" / "cache").exists()
    (tmp_path / "cache").rename(tmp_path / "moved")  # a new, empty cache there would compute every cell again
    assert main(["--retry-failed", "--out", str(tmp_path / "run"), "--dry-run"]) == 2
    assert capsys.readouterr().err == (f"error: The cache {tmp_path / 'cache'} that {tmp_path / 'run'}/config.yaml "
                                       f"records does not exist (moved or removed?); pass --cache-dir with the cache "
                                       f"the run used, so that only the failed cells run again.\n")
    assert main(["--retry-failed", "--out", str(tmp_path / "run"), "--dry-run", "--cache-dir",
                 str(tmp_path / "moved")]) == 0
    assert "cached cells: 1 of 1" in capsys.readouterr().out


def test_retry_failed_on_a_config_cut_short_says_so(tmp_path, capsys):
    """Before: a config.yaml whose grid lost fields read as another grid, and the run said the folder held a
    different configuration and to pass --retry-failed, which had been passed."""
    from unlearnbench.grid import load_grid
    from unlearnbench.runner import grid_dict

    run = tmp_path / "run"
    run.mkdir()
    grid = grid_dict(load_grid(str(write_grid(tmp_path))))
    (run / "config.yaml").write_text(yaml.safe_dump({"grid": grid, "device": "cpu"}))
    assert main(["--retry-failed", "--out", str(run), "--cache-dir", str(tmp_path / "c"), "--dry-run"]) == 0
    del grid["metrics"]  # a file cut short after the grid's first fields
    (run / "config.yaml").write_text(yaml.safe_dump({"grid": grid, "device": "cpu"}))
    capsys.readouterr()
    assert main(["--retry-failed", "--out", str(run), "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "config.yaml is not written in full (its metrics differ" in err and len(err.splitlines()) == 1


def test_only_a_forget_class_of_one_round_methods_says_their_cells_cover_every_class(tmp_path, capsys):
    """original and wfnet unlearn all forget classes in one cell (forget_class=all): a class filter that misses
    them says so, instead of only listing 'all'."""
    only_one_round = write_grid(tmp_path, "a.yaml", methods=["original"], forget_classes=[1])
    mixed = write_grid(tmp_path, "b.yaml", methods=["original", "retrain"], forget_classes=[1])
    for grid, only, said in (
            (only_one_round, ["forget_class=1"], "--only forget_class=1 matches no cell of grid 'tiny': method "
             "original is one-round, each cell unlearning every forget class at once (forget_class=all); use --only "
             "forget_class=all, or add a per-class method to the grid."),
            (mixed, ["method=original", "forget_class=1"], "The --only filters method=original, forget_class=1 match "
             "no cell of grid 'tiny' together: method original is one-round, each cell unlearning every forget class "
             "at once (forget_class=all); drop forget_class or use forget_class=all."),
            (mixed, ["forget_class=3"], "--only forget_class=3 matches no cell of grid 'tiny'; its forget_class "
             "values are: 1, all.")):
        argv = ["--grid", str(grid), "--dry-run", "--cache-dir", str(tmp_path / "c")]
        assert main([*argv, *(a for o in only for a in ("--only", o))]) == 2
        assert capsys.readouterr().err.strip() == f"error: {said}"
    assert main(["--grid", str(only_one_round), "--only", "forget_class=all", "--dry-run", "--cache-dir",
                 str(tmp_path / "c")]) == 0


def test_dry_run_refuses_what_the_run_would_refuse_before_computing(tmp_path, capsys):
    """--gpus without CUDA and --out naming a file are the run's first errors, and a plugin that fails to import
    makes the run exit 1: the dry run said the plan was fine (exit 0) for all three."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "bad.py").write_text("def (\n")
    base = ["--grid", str(write_grid(tmp_path)), "--dry-run", "--cache-dir", str(tmp_path / "c")]
    if not torch.cuda.is_available():
        assert main([*base, "--gpus", "0"]) == 2
        assert "--gpus needs a CUDA device" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {tmp_path / 'afile'} is a file; give a folder for the run."
    assert main([*base, "--plugins", str(tmp_path / "plugins")]) == 1
    assert "bad.py failed to import" in capsys.readouterr().out


def test_gpus_this_machine_lacks_or_names_twice_are_refused_before_the_run(tmp_path, monkeypatch, capsys):
    """On a machine said to have two GPUs: --gpus 7 and --gpus -1 passed the dry run and failed every cell (the
    second saying "Unknown device 'cuda:-1'; use auto, cpu, cuda or cuda:N", of a --device never given); --gpus 0,0
    put two workers on one GPU with cost rows unmarked; --device cuda:1 beside --gpus was dropped silently."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    grid = write_grid(tmp_path, methods=["original", "random_labels"])  # one to tune
    base = ["--grid", str(grid), "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r")]
    listed = "--gpus expects distinct comma-separated GPU indices such as 0,1,2, got"
    for extra, said in ((["--gpus", "7"], "--gpus names GPU 7, but this machine has 2 CUDA device(s), 0 to 1."),
                        (["--gpus", "0,2", "--workers", "1"], "--gpus names GPU 2, but this machine has 2 CUDA"),
                        (["--gpus", "-1"], f"{listed} '-1'."), (["--gpus", "0,0"], f"{listed} '0,0'."),
                        (["--gpus", "0,x"], f"{listed} '0,x'."),
                        (["--device", "cuda:1", "--gpus", "0,1"], "--device cuda:1 and --gpus both pick GPUs; drop one")):
        for command in (["--dry-run"], [], ["tune"]):
            assert main([*command, *base, *extra]) == 2, (extra, command)
            assert f"error: {said}" in capsys.readouterr().err, (extra, command)  # (tune notes its budget first)
            assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


def test_more_workers_than_memory_holds_are_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """Before: `--workers 100000` started a worker per cell (64 on the smoke grid) and the machine ran out of
    memory, killing workers mid-cell. Here the machine is said to hold 1 GiB, less than three processes of this one's
    size."""
    from unlearnbench import runner

    monkeypatch.setattr(runner, "host_memory_bytes", lambda: 2**30)
    run_dir = tmp_path / "run"
    grid = write_grid(tmp_path, forget_classes=[0, 1, 2])  # 4 cells: at most 4 workers start
    assert main(["--grid", str(grid), "--device", "cpu", "--workers", "100000", "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --workers 100000 would start 4 worker processes of about ") and len(
        err.splitlines()) == 1
    assert "more than this machine's 1 GiB; use --workers" in err
    assert not (run_dir / "config.yaml").exists()
    assert main(["--grid", str(grid), "--device", "cpu", "--workers", "100000", "--dry-run"]) == 2  # as the run
    assert capsys.readouterr().err.startswith("error: --workers 100000 would start 4 worker processes")


def test_more_cpu_workers_times_threads_than_cores_is_a_warning_about_timings(tmp_path, monkeypatch):
    import os

    import torch

    from unlearnbench.grid import load_grid
    from unlearnbench.launchers import LaunchOptions
    from unlearnbench.planning import RunOptions, plan
    from unlearnbench.runner import check_workers

    grid = load_grid(str(write_grid(tmp_path, forget_classes=[0, 1, 2])))
    cells = plan(grid, RunOptions(device="cpu")).cells
    monkeypatch.setattr(os, "cpu_count", lambda: 2)

    def warning(**launch):
        return check_workers(grid, cells, {}, LaunchOptions(**launch), torch.device("cpu"), None, tmp_path)

    assert warning(workers=3, threads=1) == ("3 workers × 1 torch thread on 2 CPU cores: the cells share cores, so "
                                             "their recorded seconds run long (use --workers 2 for timings to "
                                             "compare)")
    assert warning(workers=100, threads=1).startswith("4 workers")  # no more workers start than there are cells
    assert warning(workers=2, threads=1) is None and warning(workers=2) is None  # default: cores / workers threads
    assert warning(workers=1, threads=4) == ("1 worker × 4 torch threads on 2 CPU cores: the cells share cores, so "
                                             "their recorded seconds run long (use --threads 2 for timings to "
                                             "compare)")  # not --workers 1, which it has
    assert warning(launcher="slurm", workers=8) is None
    assert check_workers(grid, cells, {}, LaunchOptions(workers=8, gpus=(0,)), torch.device("cuda"), None,
                         tmp_path) is None


def test_tuned_parameters_searched_over_other_ranges_than_the_method_declares_now_are_a_warning(tmp_path, capsys):
    """Before: a study kept from before a method's space changed (a range widened, a parameter added) was applied
    silently, as if the current space had been searched."""
    import yaml

    from unlearnbench.discovery import discover
    from unlearnbench.models import BackboneSpec
    from unlearnbench.search_space import describe

    spec = BackboneSpec("vgg16", 0.0625)
    now = describe(discover()[0]["finetune"].cls().space(spec))
    tuned = tmp_path / "tuned.yaml"
    grid = write_grid(tmp_path, methods=["finetune"], tuned=str(tuned))
    for recorded, warned in [(now, None), ({**now, "lr": "1e-05…1e-03 (log)"}, "lr"),
                             ({k: v for k, v in now.items() if k != "steps"}, "steps")]:
        tuned.write_text(yaml.safe_dump({"tuned": {"mnist5k": {"vgg16-w0.0625": {"finetune": {
            "params": {}, "search_space": recorded}}}}}, allow_unicode=True))
        assert main(["--grid", str(grid), "--dry-run", "--cache-dir", str(tmp_path / "c")]) == 0
        err = capsys.readouterr().err
        if warned is None:
            assert "searched over other ranges" not in err
        else:
            assert (f"warning: the tuned parameters '{tuned}' of finetune on mnist5k/vgg16-w0.0625 ({warned}) were "
                    f"searched over other ranges than the method declares now") in err
            # the command adds the study to the result the grid reads (before: to results/tuning/<grid name>)
            assert f"re-tune with `run_bench.py tune --grid {grid} --only method=finetune --out {tmp_path} --cache-dir {tmp_path / 'c'}`." in err


def test_tuned_parameters_chosen_with_another_fixed_value_than_the_grid_runs_are_a_warning(tmp_path, capsys):
    import yaml

    tuned = tmp_path / "tuned.yaml"
    grid = write_grid(tmp_path, methods=[{"name": "finetune", "params": {"batch_size": 32}}], tuned=str(tuned))
    for fixed, warned in [({"batch_size": 32}, None), ({"batch_size": 64}, "batch_size: 64 there, 32 here")]:
        tuned.write_text(yaml.safe_dump({"tuned": {"mnist5k": {"vgg16-w0.0625": {"finetune": {
            "params": {}, "fixed": fixed}}}}}))
        assert main(["--grid", str(grid), "--dry-run", "--cache-dir", str(tmp_path / "c")]) == 0
        err = capsys.readouterr().err
        if warned is None:
            assert "held fixed" not in err
        else:
            assert (f"warning: the tuned parameters '{tuned}' of finetune on mnist5k/vgg16-w0.0625 ({warned}) were "
                    f"chosen with another value of a parameter their study held fixed, which this grid changes.") in err


def test_tuned_parameters_chosen_for_another_version_of_the_method_are_a_warning(tmp_path, capsys):
    """Before: SalUn gained a parameter (schedule) after its smoke studies, which changed its trials' results, and
    the shipped choice (worse than the defaults at the new code) was applied without a word. A study records the
    hash of the method's code, and the parameters it held; either differing from the method's now is a warning."""
    import yaml

    from unlearnbench.discovery import discover

    from unlearnbench.models import BackboneSpec

    info = discover()[0]["finetune"]
    defaults = info.cls().default_parameters(BackboneSpec("vgg16", 0.0625))
    tuned = tmp_path / "tuned.yaml"
    grid = write_grid(tmp_path, methods=["finetune"], tuned=str(tuned))
    held = {k: v for k, v in defaults.items() if k != "lr"}
    plugins = tmp_path / "plugins"  # the hint names the run's plugin folders (a plugin is unknown to tune without)
    plugins.mkdir()
    for study, warned in [({"method_code": info.source_hash, "fixed": held}, None),
                          ({"method_code": "0" * 16, "fixed": held}, "its code changed since"),
                          ({"fixed": {k: v for k, v in held.items() if k != "steps"}}, "steps added since"),
                          ({}, None)]:  # a study from before either was recorded: nothing to compare
        tuned.write_text(yaml.safe_dump({"tuned": {"mnist5k": {"vgg16-w0.0625": {"finetune": {
            "params": {"lr": defaults["lr"]}, **study}}}}}))
        assert main(["--grid", str(grid), "--dry-run", "--cache-dir", str(tmp_path / "c"), "--plugins",
                     str(plugins)]) == 0
        err = capsys.readouterr().err
        if warned is None:
            assert "another version of the method" not in err
        else:
            assert (f"warning: the tuned parameters '{tuned}' of finetune on mnist5k/vgg16-w0.0625 ({warned}) were "
                    f"chosen for another version of the method; re-tune with `run_bench.py tune --grid {grid} "
                    f"--only method=finetune --out {tmp_path} --cache-dir {tmp_path / 'c'} --plugins {plugins}`.") in err


def test_a_run_folder_records_only_the_values_its_tuned_result_sets(tmp_path):
    """Before: a cell's every parameter was recorded, so a changed default of a parameter the result does not set
    was refused as 'tuned again since'."""
    import yaml

    from unlearnbench.grid import load_grid
    from unlearnbench.planning import RunOptions, plan
    from unlearnbench.runner import tuned_values

    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(yaml.safe_dump({"tuned": {"mnist5k": {"vgg16-w0.0625": {"finetune": {"params": {"lr": 0.01}}}}}}))
    grid = load_grid(str(write_grid(tmp_path, methods=["finetune", "negative_gradient"], tuned=str(tuned))))
    planned = plan(grid, RunOptions(device="cpu", cache_dir=tmp_path / "c"))
    assert tuned_values(grid, planned.cells) == {"mnist5k/vgg16-w0.0625/finetune": {"lr": 0.01}}


def test_the_plan_counts_only_the_stage_models_the_cache_lacks_in_its_cost_estimate(tmp_path, capsys):
    """A grid whose originals and retrained models are cached trains none of them: before, the dry run said
    '~0.11 M training images' after a finished run as before it, and called every stage model cached."""
    grid = write_grid(tmp_path, recipe={"epochs": 1}, methods=["original", "retrain"])
    cache = str(tmp_path / "c")
    assert main(["--grid", str(grid), "--dry-run", "--cache-dir", cache]) == 0
    before = capsys.readouterr().out
    assert "stages: 1 original models, 2 retrained models (shared; cached: 0 and 0)" in before
    assert "cost estimate: ~0.01 M training images" in before  # 3 models × 1 epoch × 3,600 images
    assert "(under a CPU-minute at 3,000 img/s" in before  # once 'about 0 CPU-minutes'
    assert main(["--grid", str(grid), "--quiet", "--out", str(tmp_path / "run"), "--cache-dir", cache,
                 "--workers", "0", "--no-report"]) == 0
    capsys.readouterr()
    assert main(["--grid", str(grid), "--dry-run", "--cache-dir", cache]) == 0
    after = capsys.readouterr().out
    assert "stages: 1 original models, 2 retrained models (shared; cached: 1 and 2)" in after
    assert "cost estimate" not in after and "cached cells: 3 of 3" in after, after


def test_the_cli_plans_a_grid_once_to_warn_and_to_run_or_print_it(tmp_path, monkeypatch, shared_cache):
    """The CLI planned each grid twice (once for its tuned-parameter warnings, again to run it or print its plan):
    the paper grid's dry run on an ImageNet-shaped tree took 29-30 s that way and 23 s planned once."""
    from unlearnbench import planning, runner

    calls, real = [], planning.plan
    monkeypatch.setattr(planning, "plan", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(runner, "plan", planning.plan)
    grid = write_grid(tmp_path, datasets=[SMALL_MNIST], methods=["original"], forget_classes=[0])
    assert main(["--grid", str(grid), "--dry-run", "--cache-dir", str(shared_cache)]) == 0
    assert len(calls) == 1
    assert main(["--grid", str(grid), "--cache-dir", str(shared_cache), "--out", str(tmp_path / "run"), "--quiet",
                 "--workers", "0", "--device", "cpu", "--no-report"]) == 0
    assert len(calls) == 2 and (tmp_path / "run" / "records.csv").exists()
