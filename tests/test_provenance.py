"""tks_jax.provenance: commit and dirty flag against git itself, versions against the installed
packages, the config and its arithmetic options, and the absence of git."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import jax
import ml_collections
import pytest

from tks_jax import provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def _make_repo(path):
    """A tiny git repository with the source layout the dirty flag looks at."""
    os.makedirs(path / "tks_jax")
    (path / "tks_jax" / "a.py").write_text("x = 1\n")
    (path / "notes.txt").write_text("results\n")
    _git(path, "init", "-q")
    _git(path, "add", "-A")
    _git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return _git(path, "rev-parse", "HEAD")


@needs_git
def test_git_info_commit_and_dirty_flag(tmp_path):
    commit = _make_repo(tmp_path)
    assert provenance.git_info(str(tmp_path)) == {"commit": commit, "dirty": False}
    # Untracked files and changes outside the source paths leave the tree clean.
    (tmp_path / "tks_jax" / "new.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("more results\n")
    assert provenance.git_info(str(tmp_path)) == {"commit": commit, "dirty": False}
    (tmp_path / "tks_jax" / "a.py").write_text("x = 2\n")
    assert provenance.git_info(str(tmp_path)) == {"commit": commit, "dirty": True}


def test_git_info_outside_git(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert provenance.git_info(str(tmp_path)) == {"commit": None, "dirty": None}


@needs_git
def test_git_info_of_this_checkout():
    root = os.path.dirname(os.path.dirname(os.path.abspath(provenance.__file__)))
    if subprocess.run(["git", "-C", root, "rev-parse"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    info = provenance.git_info()
    assert info["commit"] == _git(root, "rev-parse", "HEAD")
    assert isinstance(info["dirty"], bool)


def test_versions_and_machine():
    import flax
    import optax

    v = provenance.library_versions()
    assert v["jax"] == jax.__version__ and v["flax"] == flax.__version__
    assert v["optax"] == optax.__version__ and v["jaxlib"] is not None
    m = provenance.machine_info()
    assert m["backend"] == jax.default_backend()
    assert m["device_kind"] == jax.devices()[0].device_kind
    assert m["device_count"] == len(jax.devices())
    assert set(m["cpu_isa"]) <= set(provenance.CPU_ISA_FLAGS)
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        names = [ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("model name")]
        if names:
            assert m["cpu_model"] == names[0]
        flags = [ln.split(":", 1)[1].split() for ln in lines
                 if ln.lower().startswith(("flags", "features"))]
        if flags:  # the machine's own extensions reach the record, in the declared order
            assert m["cpu_isa"] == [f for f in provenance.CPU_ISA_FLAGS if f in flags[0]]


def test_cpu_model_and_vector_extensions_from_cpuinfo():
    x86 = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel Xeon 8480\n"
           "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 amx_bf16 avx512vl\n\n"
           "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    assert provenance.cpu_from_cpuinfo(x86) == {
        "cpu_model": "Intel Xeon 8480",
        "cpu_isa": ["avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"]}
    amd = "model name\t: AMD EPYC\nflags\t\t: sse avx avx2 fma\n"
    assert provenance.cpu_from_cpuinfo(amd)["cpu_isa"] == ["avx", "avx2", "fma"]
    arm = "processor\t: 0\nFeatures\t: fp asimd sve\nCPU part\t: 0xd40\n"
    assert provenance.cpu_from_cpuinfo(arm) == {"cpu_model": None, "cpu_isa": ["asimd", "sve"]}
    assert provenance.cpu_from_cpuinfo("") == {"cpu_model": None, "cpu_isa": []}


def test_collect_stores_the_resolved_config():
    config = ml_collections.ConfigDict({"seed": 3, "model": {"name": "vgg_snn", "conv": "direct",
                                                              "dtype": "float64"}})
    prov = provenance.collect(config)
    assert prov["config"] == config.to_dict()
    # remat unset: None (the model's default), not a guess.
    assert prov["arithmetic"] == {"conv": "direct", "dtype": "float64", "remat": None}
    assert set(prov) == {"git", "versions", "machine", "arithmetic", "config"}
    json.dumps(prov, allow_nan=False)  # storable as one JSON line
    assert provenance.collect()["config"] == {}
    with pytest.raises(TypeError, match="ConfigDict or a mapping"):
        provenance.collect(["seed", 3])


def test_collect_records_the_code_it_is_given(monkeypatch):
    # A run passes the git state it started with; collect must not ask git again.
    monkeypatch.setattr(provenance, "git_info", lambda root=None: pytest.fail("asked git"))
    started = {"commit": "c" * 40, "dirty": True}
    assert provenance.collect({"seed": 1}, git=started)["git"] == started
    from tks_jax import report

    assert report.build_report({"top1": 0.5}, {"seed": 1}, git=started)["provenance"]["git"] == (
        started)


def test_code_version_labels():
    c = "a" * 40
    assert provenance.code_version({"git": {"commit": c, "dirty": False}}) == c
    assert provenance.code_version({"git": {"commit": c, "dirty": True}}) == c + "+dirty"
    assert provenance.code_version({"git": {"commit": None, "dirty": None}}) == "unknown"
    assert provenance.code_version(None) == "unknown"
