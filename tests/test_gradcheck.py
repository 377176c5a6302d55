"""gradcheck: hand-written gradients against finite differences, on the seed-001 network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lrlab import examples
from lrlab.errors import LrlabError
from lrlab.gradcheck import DEFAULT_MAX_ENTRIES, check_file, gradcheck, main

EXAMPLES = Path(examples.__file__).parent
BUGGY = EXAMPLES / "seed001_fnn.py"
FIXED = EXAMPLES / "seed001_fnn_fixed.py"


# ----------------------------------------------------------------------------- a quadratic oracle
# loss = 0.5 w.A.w + c.w + 1.5 ||B||^2 + sum(B * D);  dloss/dw = A w + c,  dloss/dB = 3 B + D

_rng = np.random.default_rng(0)
_M = _rng.normal(size=(5, 5))
A = _M @ _M.T + np.eye(5)
C = _rng.normal(size=5)
D = _rng.normal(size=(3, 4))


def quad_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"w": rng.normal(size=5), "B": rng.normal(size=(3, 4))}


def quad_loss(p: dict) -> float:
    w, b = np.asarray(p["w"]), np.asarray(p["B"])
    return float(0.5 * w @ A @ w + C @ w + 1.5 * np.sum(b * b) + np.sum(b * D))


def quad_grads(p: dict) -> dict[str, np.ndarray]:
    w, b = np.asarray(p["w"]), np.asarray(p["B"])
    return {"w": A @ w + C, "B": 3 * b + D}


def torch_loss(p: dict) -> torch.Tensor:
    a, c, d = (torch.as_tensor(x, dtype=torch.float64) for x in (A, C, D))
    w, b = p["w"], p["B"]
    return 0.5 * w @ a @ w + c @ w + 1.5 * (b * b).sum() + (b * d).sum()


def torch_grads(p: dict) -> dict[str, torch.Tensor]:
    a, c, d = (torch.as_tensor(x, dtype=torch.float64) for x in (A, C, D))
    return {"w": a @ p["w"] + c, "B": 3 * p["B"] + d}


# ----------------------------------------------------------------------------- the seed network


def test_seed_example_flags_b1_and_only_b1() -> None:
    result = check_file(BUGGY)
    assert [row.name for row in result.rows] == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert result.wrong == ("b1",)
    assert not result.ok
    b1 = result.rows[1]
    assert b1.rel_error > 0.1  # a bug, not rounding
    assert all(row.rel_error < 1e-6 for row in result.rows if row.name != "b1")


def test_fixed_example_passes() -> None:
    result = check_file(FIXED)
    assert result.ok
    assert result.wrong == ()
    assert max(row.rel_error for row in result.rows) < 1e-6


def test_fixed_example_differs_only_in_db1() -> None:
    def code(path: Path) -> list[str]:
        text = path.read_text()
        return text[text.index('"""', 3) + 3 :].splitlines()  # without the module docstring

    changed = [(a, b) for a, b in zip(code(BUGGY), code(FIXED), strict=True) if a != b]
    assert len(changed) == 1
    assert "self.db1" in changed[0][0] and "axis=1" in changed[0][1]


def test_main_prints_one_line_per_array_and_exit_codes(capsys: pytest.CaptureFixture) -> None:
    assert main(BUGGY) == 3
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert lines[1].split()[1].startswith("rel_error=") and lines[1].endswith("WRONG")
    assert all(line.endswith("ok") for i, line in enumerate(lines) if i != 1)

    assert main(str(FIXED)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all(line.endswith("  ok") for line in lines)


def test_large_array_is_checked_on_a_seeded_subset() -> None:
    result = check_file(FIXED)
    w2 = next(row for row in result.rows if row.name == "W2")  # 64 x 128 = 8192 entries
    assert w2.checked == DEFAULT_MAX_ENTRIES
    assert next(row for row in result.rows if row.name == "W1").checked == 256


# ----------------------------------------------------------------------------- the oracle


def test_quadratic_with_known_gradient_passes() -> None:
    result = gradcheck(quad_loss, quad_params(), quad_grads)
    assert result.ok
    assert [row.name for row in result.rows] == ["w", "B"]
    assert all(
        row.rel_error < 1e-8 and row.checked == row_size
        for row, row_size in zip(result.rows, (5, 12), strict=True)
    )
    assert all(row.autograd_rel_error is None for row in result.rows)  # numpy: no autograd


def test_gradient_off_by_one_percent_is_caught() -> None:
    def scaled(p: dict) -> dict[str, np.ndarray]:
        g = quad_grads(p)
        return {"w": g["w"], "B": 1.01 * g["B"]}

    result = gradcheck(quad_loss, quad_params(), scaled)
    assert result.wrong == ("B",)
    assert result.rows[1].rel_error == pytest.approx(0.01 / 2.01, rel=1e-3)
    assert result.lines()[1].startswith("B") and result.lines()[1].endswith("WRONG")


def test_worst_index_names_the_wrong_entry() -> None:
    def one_off(p: dict) -> dict[str, np.ndarray]:
        g = quad_grads(p)
        g["B"] = g["B"].copy()
        g["B"][2, 1] += 0.5
        return g

    row = gradcheck(quad_loss, quad_params(), one_off).rows[1]
    assert not row.ok
    assert row.worst_index == (2, 1)
    assert row.max_abs_error == pytest.approx(0.5, rel=1e-6)


def test_max_entries_subset_is_seeded() -> None:
    a = gradcheck(quad_loss, quad_params(), quad_grads, max_entries=4, seed=3)
    b = gradcheck(quad_loss, quad_params(), quad_grads, max_entries=4, seed=3)
    assert a == b
    assert [row.checked for row in a.rows] == [4, 4]


def test_torch_params_work_and_get_an_autograd_column() -> None:
    params = {k: torch.tensor(v) for k, v in quad_params().items()}
    result = gradcheck(torch_loss, params, torch_grads)
    assert result.ok
    for row in result.rows:
        assert row.autograd_rel_error is not None and row.autograd_rel_error < 1e-12
    assert "autograd=" in result.lines()[0]


def test_torch_params_with_a_numpy_loss_work() -> None:
    params = {k: torch.tensor(v, dtype=torch.float32) for k, v in quad_params().items()}
    result = gradcheck(quad_loss, params, quad_grads)  # np.asarray(tensor) inside
    assert result.ok
    assert all(row.autograd_rel_error is None for row in result.rows)


def test_users_arrays_are_unchanged_and_loss_sees_float64() -> None:
    seen: set[object] = set()

    def loss(p: dict) -> float:
        seen.update(v.dtype for v in p.values())
        return quad_loss(p)

    numpy_params = {k: v.astype(np.float32) for k, v in quad_params().items()}
    numpy_before = {k: v.copy() for k, v in numpy_params.items()}
    gradcheck(loss, numpy_params, quad_grads)
    assert seen == {np.dtype(np.float64)}
    for k, v in numpy_params.items():
        assert v.dtype == np.float32 and np.array_equal(v, numpy_before[k])

    torch_params = {k: torch.tensor(v) for k, v in quad_params().items()}
    torch_before = {k: v.clone() for k, v in torch_params.items()}
    gradcheck(torch_loss, torch_params, torch_grads)
    for k, v in torch_params.items():
        assert torch.equal(v, torch_before[k]) and not v.requires_grad


# ----------------------------------------------------------------------------- errors


def test_missing_gradient_is_named() -> None:
    with pytest.raises(LrlabError, match="'B'"):
        gradcheck(quad_loss, quad_params(), lambda p: {"w": quad_grads(p)["w"]})


def test_extra_gradient_is_named() -> None:
    with pytest.raises(LrlabError, match="'bias'"):
        gradcheck(quad_loss, quad_params(), lambda p: {**quad_grads(p), "bias": np.zeros(1)})


def test_shape_mismatch_names_array_and_both_shapes() -> None:
    def bad(p: dict) -> dict[str, np.ndarray]:
        return {"w": (A @ p["w"] + C)[:, None], "B": 3 * p["B"] + D}

    with pytest.raises(LrlabError) as info:
        gradcheck(quad_loss, quad_params(), bad)
    message = str(info.value)
    assert "'w'" in message and "(5, 1)" in message and "(5,)" in message


def test_non_scalar_loss_and_bad_options_are_rejected() -> None:
    with pytest.raises(LrlabError, match="loss"):
        gradcheck(lambda p: np.ones(3), quad_params(), quad_grads)
    with pytest.raises(LrlabError, match="eps"):
        gradcheck(quad_loss, quad_params(), quad_grads, eps=0.0)
    with pytest.raises(LrlabError, match="max_entries"):
        gradcheck(quad_loss, quad_params(), quad_grads, max_entries=0)
    with pytest.raises(LrlabError, match="params"):
        gradcheck(quad_loss, {}, quad_grads)


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.py"
    with pytest.raises(LrlabError, match=r"nope\.py"):
        check_file(path)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("params = {}\ndef loss(p:\n")
    with pytest.raises(LrlabError, match=r"broken\.py.*syntax error at line 2"):
        check_file(path)


def test_missing_name_in_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "half.py"
    path.write_text(
        "import numpy as np\nparams = {'w': np.ones(2)}\n"
        "def loss(p):\n    return float((p['w'] ** 2).sum())\n"
    )
    with pytest.raises(LrlabError, match=r"half\.py.*does not define grads"):
        check_file(path)


def test_user_file_can_import_its_neighbours(tmp_path: Path) -> None:
    (tmp_path / "mymodel.py").write_text("def f(w):\n    return float((w ** 2).sum())\n")
    path = tmp_path / "check.py"
    path.write_text(
        "import numpy as np\nfrom mymodel import f\nparams = {'w': np.arange(3.0)}\n"
        "def loss(p):\n    return f(p['w'])\n"
        "def grads(p):\n    return {'w': 2 * p['w']}\n"
    )
    assert check_file(path).ok


# ------------------------------------------------------------- a file that does not finish

_GOOD = (
    "import numpy as np\n"
    "params = {'w': np.arange(3.0)}\n"
    "def loss(p):\n    return float((p['w'] ** 2).sum())\n"
    "def grads(p):\n    return {'w': 2 * p['w']}\n"
)
FAILING_FILES = [  # (file text, the line named, what the message says happened)
    ("import sys\nsys.exit(0)\n" + _GOOD, 2, "(while loading) called sys.exit(0)"),
    (_GOOD + "raise SystemExit\n", 7, "(while loading) called sys.exit(None)"),
    (_GOOD + "exit(1)\n", 7, "(while loading) called sys.exit(1)"),
    (_GOOD.replace("return {'w': 2 * p['w']}", "import sys; sys.exit(0)"), 6,
     "(in grads()) called sys.exit(0)"),
    (_GOOD.replace("return float((p['w'] ** 2).sum())", "raise SystemExit(0)"), 4,
     "(in loss()) called sys.exit(0)"),
    (_GOOD.replace("return {'w': 2 * p['w']}", "return {'w': 2 * p['v']}"), 6,
     "(in grads()) raised KeyError: 'v'"),
    (_GOOD.replace("return float((p['w'] ** 2).sum())", "return 1 / 0"), 4,
     "(in loss()) raised ZeroDivisionError: division by zero"),
    ("import numpy as np\nimport no_such_module_here\n" + _GOOD, 2,
     "(while loading) raised ModuleNotFoundError: No module named 'no_such_module_here'"),
    ("params = {}\nraise RuntimeError('no data')\n", 2, "raised RuntimeError: no data"),
]


@pytest.mark.parametrize("case", FAILING_FILES, ids=[
    "exit-at-import", "raise-systemexit", "builtin-exit", "exit-in-grads", "exit-in-loss",
    "keyerror-in-grads", "zerodiv-in-loss", "import-error", "error-at-import"])
def test_an_exit_or_exception_in_the_file_fails_naming_file_and_line(case, tmp_path: Path,
                                                                     monkeypatch, capsys
                                                                     ) -> None:
    text, line, what = case
    path = tmp_path / "user_grads.py"
    path.write_text(text)
    with pytest.raises(LrlabError) as info:
        check_file(path)
    message = str(info.value)
    assert "user_grads.py" in message and f"line {line} " in message and what in message
    # the CLI: exit 2 and that one line, never a silent exit 0
    from lrlab import cli

    monkeypatch.setattr("sys.argv", ["lrlab", "gradcheck", str(path)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert captured.err.strip().splitlines() == [f"lrlab: error: {message}"]
    assert "Traceback" not in captured.err and captured.out == ""


def test_the_gradcheck_cli_never_passes_a_file_that_exits(tmp_path: Path) -> None:
    """In a real process: `sys.exit(0)` inside grads() is exit 2 with one line, not exit 0."""
    import subprocess
    import sys

    path = tmp_path / "exits.py"
    path.write_text(_GOOD.replace("return {'w': 2 * p['w']}", "import sys; sys.exit(0)"))
    res = subprocess.run([sys.executable, "-m", "lrlab.cli", "gradcheck", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "exits.py' line 6 (in grads()) called sys.exit(0)" \
        in res.stderr


def test_exit_inside_the_python_api_is_an_lrlab_error() -> None:
    def leaves(p: dict) -> dict:
        raise SystemExit(3)

    with pytest.raises(LrlabError, match=r"grads\(params\) called sys.exit\(3\) instead of "
                                         "returning"):
        gradcheck(quad_params(), quad_loss, leaves)


def test_lrlab_gradcheck_is_the_function_on_every_access() -> None:
    import importlib

    import lrlab

    first, second = lrlab.gradcheck, lrlab.gradcheck
    importlib.import_module("lrlab.gradcheck")  # importing the submodule again changes nothing
    from lrlab import gradcheck as third

    assert first is second is third is gradcheck
    assert lrlab.gradcheck(quad_params(), quad_loss, quad_grads).ok
    assert lrlab.gradcheck(quad_params(), quad_loss, quad_grads).ok  # the second call too


def test_documented_order_and_the_older_order_agree() -> None:
    """`gradcheck(params, loss, grads)` as a gradcheck file defines them; keywords work; the
    older `(loss, params, grads)` gives the same numbers."""
    def wrong(p: dict) -> dict:
        return {**quad_grads(p), "B": 2 * quad_grads(p)["B"]}

    documented = gradcheck(quad_params(), quad_loss, wrong)
    older = gradcheck(quad_loss, quad_params(), wrong)
    keywords = gradcheck(grads=wrong, loss=quad_loss, params=quad_params())
    assert documented == older == keywords
    assert documented.wrong == ("B",)
    with pytest.raises(LrlabError, match="`loss` must be a function"):
        gradcheck(quad_params(), "not a function", quad_grads)
    with pytest.raises(LrlabError, match="`params` must be a non-empty dict"):
        gradcheck(quad_loss, quad_grads, quad_grads)


def test_numpy_scalars_as_options() -> None:
    a = gradcheck(quad_params(), quad_loss, quad_grads, eps=np.float64(1e-6),
                  max_entries=np.int64(4), seed=np.int32(3))
    b = gradcheck(quad_params(), quad_loss, quad_grads, eps=1e-6, max_entries=4, seed=3)
    assert a == b
