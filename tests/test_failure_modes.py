"""Every failure is one clear line, and resume is exact or refuses (see README, Failure modes)."""
import errno
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from fer_robust.cli import predict as predict_cli
from fer_robust.cli import test as test_cli
from fer_robust.cli import train as train_cli

from _demo_runs import DEMO, FAST, ROOT, assert_same_epochs, read_metrics


# --------------------------------------------------------------------------------------------------
# Every tool: exit status 2 and one line on bad input
# --------------------------------------------------------------------------------------------------
BAD_INPUT = {
    "train": (["--config", DEMO, "optim.lr=-0.1", "output_dir={tmp}/run"], "'optim.lr' must be > 0"),
    "test": (["--checkpoint", "{tmp}/missing"], "checkpoint not found"),
    "relabel": (["--checkpoint", "{tmp}/missing", "--out", "{tmp}/rel"], "checkpoint not found"),
    "predict": (["--checkpoint", "{tmp}/missing", "{tmp}/face.png"], "no such image or folder"),
    "export": (["--checkpoint", "{tmp}/missing", "--format", "onnx", "--out", "{tmp}/m.onnx"],
               "checkpoint not found"),
    "data_summary": (["--dataset", "rafdb", "--root", "{tmp}/missing"],
                     "RAF-DB root: expected folder not found"),
    "benchmark": (["--data-root", "{tmp}/missing", "--out", "{tmp}/bench", "--quick"],
                  "FERPlus root: expected folder not found"),
}


def test_every_tool_has_a_bad_input_case():
    assert sorted(BAD_INPUT) == sorted(p.stem for p in (ROOT / "tools").glob("*.py"))


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """Every tool run as a subprocess on its bad input, all at once (start-up is mostly imports)."""
    tmp = tmp_path_factory.mktemp("bad_input")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = {tool: subprocess.Popen([sys.executable, str(ROOT / "tools" / f"{tool}.py"),
                                     *[a.format(tmp=tmp) for a in args]], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tool, (args, _) in BAD_INPUT.items()}
    outputs = {tool: p.communicate(timeout=600) for tool, p in procs.items()}
    return {tool: (procs[tool].returncode, *outputs[tool]) for tool in procs}


@pytest.mark.parametrize("tool", sorted(BAD_INPUT))
def test_tool_exits_2_with_one_line_on_bad_input(tool, bad_input_runs):
    _, message = BAD_INPUT[tool]
    returncode, _, stderr = bad_input_runs[tool]
    lines = stderr.strip().splitlines()
    assert returncode == 2, stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: ") and message in lines[0], lines


# --------------------------------------------------------------------------------------------------
# Resume is exact or refuses
# --------------------------------------------------------------------------------------------------
THREE_EPOCHS = ["--config", DEMO, *FAST, "stages.0.epochs=1", "stages.1.epochs=1",
                "stages.2.epochs=1", "data.noise.type=symmetric", "data.noise.rate=0.3"]


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory):
    """Stopped after epoch 1: checkpoints epoch_000 and epoch_001, metrics of epochs 0 and 1 (the
    uninterrupted run's: every resume below is compared with them)."""
    run = tmp_path_factory.mktemp("cut") / "run"
    train_cli.main([*THREE_EPOCHS, f"output_dir={run}", "--stop-after-epoch", "1"])
    return run


@pytest.fixture
def run_copy(cut_run, tmp_path):
    return Path(shutil.copytree(cut_run, tmp_path / "run"))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# One file per kind of check: a safetensors header, a torch zip archive, the trainer's JSON, the
# random states accelerate would fail to restore without a word.
@pytest.mark.parametrize("damage", ["model.safetensors", "optimizer.bin", "trainer_state.json",
                                    "random_states_0.pkl"])
def test_damaged_checkpoint_falls_back_to_the_previous_one_exactly(damage, run_copy, cut_run):
    target = run_copy / "checkpoints" / "epoch_001" / damage
    target.unlink() if damage.startswith("random_states") else truncate(target)
    with pytest.warns(UserWarning, match=rf"checkpoint epoch_001 \({damage}: .*\) is damaged; "
                                         "resuming from an earlier one"):
        train_cli.main(["--resume", str(run_copy), "--stop-after-epoch", "1"])
    assert_same_epochs(read_metrics(run_copy), read_metrics(cut_run))


def test_latest_pointing_to_a_missing_folder_falls_back_and_leftovers_are_cleaned(run_copy,
                                                                                  cut_run):
    checkpoints = run_copy / "checkpoints"
    shutil.rmtree(checkpoints / "epoch_001")          # `latest` still names it
    (checkpoints / ".latest.k2j4x.tmp").write_text("epoch_002\n")
    (checkpoints / ".tmp_epoch_002").mkdir()
    train_cli.main(["--resume", str(run_copy), "--stop-after-epoch", "1"])
    assert_same_epochs(read_metrics(run_copy), read_metrics(cut_run))
    assert not list(checkpoints.glob(".*"))


def test_missing_random_states_refuse_unless_resume_inexact_which_is_recorded(run_copy, capsys):
    for folder in ("epoch_000", "epoch_001"):
        (run_copy / "checkpoints" / folder / "random_states_0.pkl").unlink()
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["--resume", str(run_copy)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert "cannot resume exactly from" in err[0] and "random_states_0.pkl: missing" in err[0]
    assert "pass --resume-inexact" in err[0]
    assert len(read_metrics(run_copy)) == 2  # nothing was touched
    with pytest.warns(UserWarning, match="--resume-inexact: epoch_001: random_states_0.pkl: "
                                         "missing"):
        train_cli.main(["--resume", str(run_copy), "--resume-inexact"])
    records = read_metrics(run_copy)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert "random_states_0.pkl: missing" in records[2]["resume_inexact"]
    assert "resume_inexact" not in records[1]


def test_kill_before_the_first_checkpoint_resumes_from_epoch_0(run_copy, cut_run, capsys):
    """A kill after an epoch's metrics line but before any checkpoint was kept: a fresh run still
    refuses to overwrite, and --resume trains again from epoch 0, truncating metrics.jsonl."""
    shutil.rmtree(run_copy / "checkpoints")
    (run_copy / "checkpoints" / ".tmp_epoch_000").mkdir(parents=True)  # the half-written first one
    with pytest.raises(SystemExit):
        train_cli.main([*THREE_EPOCHS, f"output_dir={run_copy}"])
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="no checkpoint in .*; the run starts again from epoch 0"):
        train_cli.main(["--resume", str(run_copy), "--stop-after-epoch", "0"])
    assert_same_epochs(read_metrics(run_copy), read_metrics(cut_run)[:1])
    assert (run_copy / "checkpoints" / "epoch_000").is_dir()
    assert not (run_copy / "checkpoints" / ".tmp_epoch_000").exists()


# --------------------------------------------------------------------------------------------------
# Damaged weights and result files in the tools
# --------------------------------------------------------------------------------------------------
def test_damaged_or_mis_shaped_best_model_is_one_line_naming_it(run_copy, capsys, tmp_path):
    from fer_robust.data.demo import save_demo_as_image_folder
    save_demo_as_image_folder(tmp_path / "faces", per_class=1, img_size=48)
    truncate(run_copy / "best_model.safetensors")
    for tool, argv in ((test_cli, ["--split", "val"]),
                       (predict_cli, ["--no-detect", str(tmp_path / "faces")])):
        with pytest.raises(SystemExit) as exc:
            tool.main(["--checkpoint", str(run_copy), *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1
        assert f"damaged file {run_copy / 'best_model.safetensors'}: " in err[0]
    # Weights of another class count: the run's classes.json no longer fits its weights.
    shutil.copy(run_copy / "checkpoints" / "epoch_001" / "model.safetensors",
                run_copy / "best_model.safetensors")
    classes = json.loads((run_copy / "classes.json").read_text())
    (run_copy / "classes.json").write_text(json.dumps(classes + ["extra"]))
    with pytest.raises(SystemExit):
        test_cli.main(["--checkpoint", str(run_copy), "--split", "val"])
    assert "does not fit the model built from its config" in capsys.readouterr().err


def test_result_files_follow_the_umask_and_never_share_a_path(cut_run, tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    expected = 0o666 & ~mask
    out = tmp_path / "confusion.png"
    test_cli.main(["--checkpoint", str(cut_run), "--split", "val", "--out", str(out)])
    assert json.loads((tmp_path / "confusion.json").read_text())["split"] == "val"
    assert out.read_bytes().startswith(b"\x89PNG")
    folder = tmp_path / "predictions"
    folder.mkdir()
    from fer_robust.data.demo import save_demo_as_image_folder
    save_demo_as_image_folder(tmp_path / "faces", per_class=1, img_size=48)
    predict_cli.main(["--checkpoint", str(cut_run), str(tmp_path / "faces"), "--out", str(folder)])
    written = [tmp_path / "confusion.json", out, folder / "predictions.csv",
               cut_run / "best_model.safetensors", cut_run / "metrics.jsonl",
               *(cut_run / "checkpoints" / "epoch_001").iterdir()]
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in written} == \
        {f.name: oct(expected) for f in written}


# --------------------------------------------------------------------------------------------------
# A corrupt image: found at start-up, or named in one line from inside a DataLoader worker
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def folder_with_a_truncated_image(tmp_path):
    from PIL import Image

    from fer_robust.data.demo import save_demo_as_image_folder
    root = tmp_path / "faces"
    save_demo_as_image_folder(root, per_class=8, img_size=48, splits=("train",))
    broken = sorted((root / "train").rglob("*.png"))[3]
    broken.unlink()
    broken = broken.with_suffix(".jpg")
    noise = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(noise).save(broken, format="JPEG")
    truncate(broken)
    return root, broken


def folder_training(root, run, *extra):
    return ["--config", DEMO, *FAST, "data.name=folder", f"data.root={root}",
            "data.val_fraction=0.25", "stages.0.epochs=1", "stages.1.epochs=0", "stages.2.epochs=0",
            "model.backbone=test_resnet", f"output_dir={run}", *extra]


def test_corrupt_image_stops_training_at_start_up_or_is_skipped(folder_with_a_truncated_image,
                                                                 tmp_path, capsys):
    root, broken = folder_with_a_truncated_image
    with pytest.raises(SystemExit) as exc:
        train_cli.main(folder_training(root, tmp_path / "run"))
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert "image(s) cannot be decoded: " in err[0] and str(broken) in err[0]
    assert not (tmp_path / "run").exists()  # found before anything is written
    with pytest.warns(UserWarning, match="skipping 1 image"):
        train_cli.main(folder_training(root, tmp_path / "skip", "data.skip_unreadable=true"))
    assert len(read_metrics(tmp_path / "skip")) == 1
    # Repaired since: the run's per-sample state covers the other images, so resume refuses.
    from PIL import Image
    Image.new("RGB", (48, 48), (90, 90, 90)).save(broken, format="JPEG")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        train_cli.main(["--resume", str(tmp_path / "skip")])
    found = re.search(r"covers (\d+) training images, the dataset now has (\d+)",
                      capsys.readouterr().err)
    assert found and int(found[2]) == int(found[1]) + 1


def test_decode_error_in_a_loader_worker_is_one_line_naming_the_file(folder_with_a_truncated_image,
                                                                     tmp_path, capsys):
    root, broken = folder_with_a_truncated_image
    with pytest.raises(SystemExit) as exc:
        train_cli.main(folder_training(root, tmp_path / "run", "data.verify_images=no",
                                       "data.num_workers=1", "data.cache_in_memory=false"))
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"train: error: folder train: cannot read image {broken}: ")


# --------------------------------------------------------------------------------------------------
# Label files are untrusted: the image paths they list stay inside their dataset's folder
# --------------------------------------------------------------------------------------------------
def _affectnet(tmp_path):
    from _benchmark_fixtures import write_affectnet

    from fer_robust.data.affectnet import read_affectnet
    root = write_affectnet(tmp_path / "affectnet", [0, 1, 2, 3], [0, 1, 2, 3])
    return (root, root / "validation.csv", 3, "Manually_Annotated_Images",
            lambda: read_affectnet(root, "test"))


def _ferplus(tmp_path):
    from _benchmark_fixtures import write_ferplus

    from fer_robust.data.ferplus import read_ferplus
    root = write_ferplus(tmp_path / "ferplus")
    return root, root / "FER2013Train" / "label.csv", 2, "FER2013Train", \
        lambda: read_ferplus(root, "train")


def _rafdb(tmp_path):
    from _benchmark_fixtures import write_rafdb

    from fer_robust.data.rafdb import read_rafdb
    root = write_rafdb(tmp_path / "rafdb")
    return (root, root / "EmoLabel" / "list_patition_label.txt", 2, "Image/aligned",
            lambda: read_rafdb(root, "train", val_fraction=0.2))


@pytest.mark.parametrize("reader", [_affectnet, _ferplus, _rafdb], ids=lambda r: r.__name__[1:])
def test_label_file_paths_that_leave_the_dataset_folder_are_refused(reader, tmp_path):
    """A row naming ``../../outside/secret.png`` or an absolute path is refused, naming the file
    and row, before any image is opened; a symlinked image folder inside the root still reads."""
    from fer_robust.data.base import DatasetFormatError

    root, label_file, line, images, read = reader(tmp_path)
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    shutil.copy(next(p for p in (root / images).rglob("*") if p.is_file()
                     and p.suffix in (".png", ".jpg")), secret)
    original = label_file.read_text()
    rows = original.splitlines()
    name = re.split(r"[ ,]", rows[line - 1])[0]
    escapes = ["../" * (len(Path(images).parts) + 1) + "outside/secret.png", str(secret)]
    if reader is _rafdb:  # a name must start with its split; "_aligned" is added to its stem
        shutil.copy(secret, secret.with_name("secret_aligned.png"))
        escapes = ["train_/" + "../" * (len(Path(images).parts) + 2) + "outside/secret.png",
                   str(secret)]
    for escape in escapes:
        rows[line - 1] = rows[line - 1].replace(name, escape, 1)
        label_file.write_text("\n".join(rows) + "\n")
        with pytest.raises(DatasetFormatError, match=rf"{re.escape(str(label_file))}:{line}: image "
                                                     "path .* leaves the dataset folder"):
            read()
        rows = original.splitlines()
    # The images on another disk, linked into the root: read as before.
    label_file.write_text(original)
    moved = tmp_path / "other_disk" / "images"
    moved.parent.mkdir()
    shutil.move(str(root / images), moved)
    if reader is _ferplus:  # the label file lives in the linked folder itself
        label_file = moved / "label.csv"
    (root / images).symlink_to(moved, target_is_directory=True)
    assert len(read()) > 0


# --------------------------------------------------------------------------------------------------
# One run writes into an output_dir at a time; an output_dir a run cannot be written into
# --------------------------------------------------------------------------------------------------
# Holds a run directory as a training does, until its stdin closes or it is killed.
HOLDER = ("import sys; from fer_robust.engine.run_dir import hold_run_dir; "
          "hold = hold_run_dir(sys.argv[1]); print('held', flush=True); sys.stdin.read()")


@pytest.fixture
def hold_in_another_process():
    """``hold(path)`` holds ``path`` from another process and returns it (killed at the end)."""
    holders = []

    def hold(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=ROOT, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        holders.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc
    yield hold
    for proc in holders:
        proc.kill()
        proc.wait()


def test_a_run_directory_another_process_holds_is_refused_and_a_dead_holders_lock_taken_over(
        run_copy, cut_run, hold_in_another_process, capsys):
    holder = hold_in_another_process(run_copy)
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["--resume", str(run_copy)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    assert f"output_dir {run_copy} is in use by another run (process {holder.pid} on " in err[0]
    assert_same_epochs(read_metrics(run_copy), read_metrics(cut_run))  # nothing was touched
    holder.kill()  # SIGKILL: its lock file stays behind, stale
    holder.wait()
    assert (run_copy / ".lock").is_file()
    train_cli.main(["--resume", str(run_copy), "--stop-after-epoch", "2"])
    assert [r["epoch"] for r in read_metrics(run_copy)] == [0, 1, 2]
    assert not (run_copy / ".lock").exists()  # released when the run ended


def test_benchmark_never_clears_a_run_directory_another_process_holds(tmp_path,
                                                                     hold_in_another_process):
    """tools/benchmark.py starts a run without a checkpoint again from scratch: not while
    another process trains in it."""
    from fer_robust.cli import benchmark as benchmark_cli
    from fer_robust.engine.run_dir import RunDirError
    from fer_robust.noise_benchmark.recipe import RunSpec, build_run_config

    run_dir = tmp_path / "runs" / "sym30-full"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("")  # its first epoch, before the first checkpoint
    cfg = build_run_config(ROOT / "configs" / "benchmark_ferplus.yaml", RunSpec("sym30", "full"),
                           "full", run_dir)
    holder = hold_in_another_process(run_dir)
    with pytest.raises(RunDirError, match=rf"in use by another run \(process {holder.pid} on "):
        benchmark_cli.run_one(cfg, run_dir, True, [])
    assert (run_dir / "metrics.jsonl").is_file()


@pytest.mark.parametrize("output_dir, message", [
    ("", "'output_dir' is empty: the run would be written into the current directory"),
    ("a_file", "output_dir {tmp}/a_file is a file, not a folder"),
    ("a_file/run", "output_dir {tmp}/a_file/run lies under {tmp}/a_file, which is a file"),
])
def test_output_dir_that_is_empty_a_file_or_under_a_file_is_one_line(output_dir, message, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["--config", DEMO, *FAST, "stages.0.epochs=1", "stages.1.epochs=0",
                        "stages.2.epochs=0",
                        f"output_dir={tmp_path / output_dir if output_dir else ''}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    assert message.format(tmp=tmp_path) in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing was written


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder no file can be made in: read-only, or for root (who ignores the mode bits)
    immutable (``chattr +i``); skipped where neither holds."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK) and shutil.which("chattr"):
        chattr = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        immutable = chattr.returncode == 0
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("cannot make a folder unwritable here")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


@pytest.mark.parametrize("tool", ["train", "test", "predict", "relabel"])
def test_an_unwritable_output_folder_is_one_line_before_any_work(tool, cut_run, unwritable_folder,
                                                                 tmp_path, capsys):
    from fer_robust.cli import relabel as relabel_cli
    from fer_robust.data.demo import save_demo_as_image_folder

    ro = unwritable_folder
    cases = {
        "train": (train_cli, ["--config", DEMO, *FAST, f"output_dir={ro}/run"],
                  f"cannot write in output_dir {ro}/run: "),
        "test": (test_cli, ["--checkpoint", str(cut_run), "--split", "val", "--out",
                            f"{ro}/eval.json"], f"the result's folder {ro} is not writable"),
        "predict": (predict_cli, ["--checkpoint", str(cut_run), "--no-detect",
                                  str(tmp_path / "faces"), "--out", f"{ro}/predictions.csv"],
                    f"--out folder {ro} is not writable"),
        "relabel": (relabel_cli, ["--checkpoint", str(cut_run), "--out", f"{ro}/relabel"],
                    f"--out folder {ro}/relabel is not writable"),
    }
    module, argv, message = cases[tool]
    if tool == "predict":
        save_demo_as_image_folder(tmp_path / "faces", per_class=1, img_size=48)
    with pytest.raises(SystemExit) as exc:
        module.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"{tool}: error: ") and message in err[0]


# --------------------------------------------------------------------------------------------------
# A full disk, Ctrl-C and a decompression bomb: one line each
# --------------------------------------------------------------------------------------------------
@contextmanager
def file_size_limit(limit: int):
    """Writes past ``limit`` bytes fail in this process (EFBIG; Python ignores SIGXFSZ): a disk
    that fills up while a file is written, without filling one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


# Which write the disk fills up in: (protocol, limit between which files' sizes, what fails).
FULL_DISK = {
    "best_model": ("validation", lambda model, opt: model // 2,
                   "cannot write {run}/best_model.safetensors: SafetensorError: "),
    "checkpoint_model": ("full_train", lambda model, opt: model // 2,
                         "cannot write {run}/checkpoints/epoch_000: SafetensorError: "),
    "checkpoint_optimizer": ("full_train", lambda model, opt: (model + opt) // 2,
                             "cannot write {run}/checkpoints/epoch_000: RuntimeError: "),
}


@pytest.mark.parametrize("where", sorted(FULL_DISK))
def test_a_disk_that_fills_up_during_a_save_is_one_line_and_the_run_resumes(where, cut_run,
                                                                            tmp_path, capsys):
    protocol, limit, message = FULL_DISK[where]
    saved = cut_run / "checkpoints" / "epoch_001"  # the same model: the sizes of its files
    model, opt = ((saved / f).stat().st_size for f in ("model.safetensors", "optimizer.bin"))
    assert opt > model
    run = tmp_path / "run"
    argv = ["--config", DEMO, *FAST, "stages.0.epochs=1", "stages.1.epochs=0", "stages.2.epochs=0",
            f"data.protocol={protocol}", f"output_dir={run}"]
    with file_size_limit(limit(model, opt)), pytest.raises(SystemExit) as exc:
        train_cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("train: error: " + message.format(run=run)), err[0]
    assert "MiB free on its device" in err[0]
    assert not list(run.glob("checkpoints/.tmp_*")) and not (run / ".lock").exists()
    if where == "checkpoint_optimizer":
        assert f"--resume {run} starts the run again" in err[0]
        with pytest.warns(UserWarning, match="no checkpoint in"):
            train_cli.main(["--resume", str(run)])
        assert [r["epoch"] for r in read_metrics(run)] == [0]


def test_no_space_left_is_one_line_whatever_write_meets_it(capsys):
    from fer_robust.cli.common import user_errors_exit
    with pytest.raises(SystemExit) as exc, user_errors_exit("train"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert exc.value.code == 2
    assert capsys.readouterr().err == "train: error: [Errno 28] No space left on device\n"


@pytest.mark.slow
def test_ctrl_c_ends_training_in_one_line_saying_where_it_resumes(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "train.py"), "--config", DEMO,
                             *FAST, "stages.0.epochs=50", "stages.1.epochs=0", "stages.2.epochs=0",
                             f"output_dir={run}"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (run / "checkpoints" / "latest").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    lines = stderr.strip().splitlines()
    assert proc.returncode == 130 and len(lines) == 1, stderr[-3000:]
    kept = (run / "checkpoints" / "latest").read_text().strip()
    assert lines[0] == f"train: interrupted; continue from {kept} with: tools/train.py --resume {run}"
    assert not (run / ".lock").exists()
    last = int(kept.split("_")[1])
    train_cli.main(["--resume", str(run), "--stop-after-epoch", str(last + 1)])
    assert [r["epoch"] for r in read_metrics(run)] == list(range(last + 2))


def test_ctrl_c_in_the_benchmark_says_the_same_command_continues(tmp_path, monkeypatch, capsys):
    from fer_robust.cli import benchmark as benchmark_cli
    out = tmp_path / "bench"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(benchmark_cli, "plan_configs", lambda *a, **k: ([], {}, set()))
    monkeypatch.setattr(benchmark_cli, "results_header", lambda *a, **k: {})
    monkeypatch.setattr(benchmark_cli, "run_all", interrupted)
    try:
        benchmark_cli.main(["--out", str(out), "--data-root", str(tmp_path)])
    except KeyboardInterrupt:  # (the traceback a user would see; pytest would stop on it)
        pytest.fail("Ctrl-C escaped the benchmark as a KeyboardInterrupt")
    except SystemExit as exc:
        assert exc.code == 130
    else:
        pytest.fail("the benchmark went on after Ctrl-C")
    assert capsys.readouterr().err == (
        "benchmark: interrupted; the same command continues: finished runs are kept and the "
        f"interrupted one resumes from its last checkpoint in {out / 'runs'}\n")


def write_png_claiming(path: Path, width: int, height: int) -> None:
    """A small, valid PNG (black, 1 bit per pixel) of ``width x height`` pixels: tens of KB on
    disk that decode to far more than Pillow's pixel limit (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    row = b"\0" * (1 + (width + 7) // 8)
    packer = zlib.compressobj()
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                                       1, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_one_line_in_predict_as_in_training(cut_run, tmp_path, capsys):
    from fer_robust.data.demo import save_demo_as_image_folder
    root = tmp_path / "faces"
    save_demo_as_image_folder(root, per_class=8, img_size=48, splits=("train",))
    bomb = next((root / "train").iterdir()) / "bomb.png"
    write_png_claiming(bomb, 20000, 20000)
    assert bomb.stat().st_size < 200_000
    for tool, argv in ((predict_cli, ["--checkpoint", str(cut_run), "--no-detect", str(bomb)]),
                       (train_cli, folder_training(root, tmp_path / "run"))):
        with pytest.raises(SystemExit) as exc:
            tool.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1, err
        assert f"{bomb}" in err[0] and "exceeds limit" in err[0], err[0]


# --------------------------------------------------------------------------------------------------
# A config is untrusted input: what it may expand to, and what an error quotes, are bounded
# --------------------------------------------------------------------------------------------------
# Nine nested levels of nine aliases under seed: a few hundred bytes that expand to 9^9 values.
ALIAS_BOMB = "seed:\n  - &l1 [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(2, 10))


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # a loader that expands gives up


def test_a_yaml_alias_bomb_is_refused_at_once_in_one_line(tmp_path):
    config = tmp_path / "bomb.yaml"
    config.write_text(ALIAS_BOMB)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--config", str(config),
                           f"output_dir={tmp_path / 'run'}"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=60, preexec_fn=_limit_memory)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    # Refused at its sixth level, the first past the bound (9^6 = 531,441 values).
    assert lines[0].startswith(f"train: error: {config} line 7: ") and len(lines[0]) < 400
    assert "expands to more than 100,000 values once its aliases are expanded" in lines[0]


def test_an_error_quotes_a_long_value_shortened_and_a_huge_file_is_no_config(tmp_path, capsys):
    long_list = "[" + ", ".join(["1"] * 50_000) + "]"  # within the bound, in the wrong place
    huge = tmp_path / "huge.yaml"
    huge.write_text("# padding\n" * 200_000 + "seed: 1\n")
    for argv, message in ((["--config", DEMO, f"seed={long_list}"],
                           "'seed' (from command line): expected an integer, got [1, 1, 1"),
                          (["--config", str(huge)], f"{huge}: 2,000,008 bytes is not a config file")):
        with pytest.raises(SystemExit) as exc:
            train_cli.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and len(err[0]) < 400, err[0][:500]
        assert message in err[0]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_demo_split_of_no_images_is_refused_when_the_config_loads(split, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["--config", DEMO, f"data.demo_{split}_per_class=0",
                        f"output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    assert f"'data.demo_{split}_per_class' must be >= 1, got 0" in err[0]
