"""Each recipe's answer to its seed question, as lines of text, from a finished experiment.

An answer function `(directory, recipe) -> list[str]` reads the store only (records, stored
final weights, the saved spec) and never trains. It prints measurements in the original
framework's terms (Nielsen's "Epoch k: N / 10000", the article's "Learning Rate: ... Test
Accuracy: ...") and quotes lrlab's verdicts (label counts, the explanation of a typical run,
its evidence) per configuration. Measurements that need the data (predictions, dead or
saturated units) are taken from each member's stored final weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lrlab.export import records

Lines = list[str]


# ----------------------------------------------------------------------------- helpers


def _median(xs: Iterable[float | None]) -> float | None:
    v = [float(x) for x in xs if x is not None and math.isfinite(x)]
    return float(np.median(v)) if v else None


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _value(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


def config_label(member: dict[str, Any], drop: Sequence[str] = ("seed",)) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in member.items() if k not in drop) or "all"


def group(recs: Sequence[dict[str, Any]], drop: Sequence[str] = ("seed",)
          ) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by every swept value except `drop`, in first-appearance order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        out.setdefault(config_label(r["member"], drop), []).append(r)
    return out


def label_counts(g: Sequence[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in g:
        lab = r["verdict"]["label"] if r["verdict"] else r["status"]
        counts[lab] = counts.get(lab, 0) + 1
    return ", ".join(f"{c}/{len(g)} {lab}" for lab, c in sorted(counts.items(),
                                                                 key=lambda kv: -kv[1]))


def typical(g: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run to quote: of the most common verdict label, the one with the median val loss."""
    labels = [r["verdict"]["label"] if r["verdict"] else r["status"] for r in g]
    top = max(set(labels), key=labels.count)
    same = [r for r, lab in zip(g, labels) if lab == top]
    key = [(r["final"]["val_loss"] if r["final"]["val_loss"] is not None else math.inf)
           for r in same]
    return same[int(np.argsort(key)[len(same) // 2])]


def _evidence(ev: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in ev.items())


def verdict_lines(recs: Sequence[dict[str, Any]], title: str = "lrlab's verdicts") -> Lines:
    """Per configuration: label counts over seeds, a typical run's explanation and evidence."""
    out = [f"{title} (per configuration, over seeds):"]
    for label, g in group(recs).items():
        t = typical(g)
        out.append(f"- {label}: {label_counts(g)}; median final val acc "
                   f"{_f(_median(r['final']['val_acc'] for r in g))}")
        if t["verdict"]:
            out.append(f"    {t['verdict']['explanation']}")
            if t["verdict"]["evidence"]:
                out.append(f"    evidence: {_evidence(t['verdict']['evidence'])}")
    return out


def _meta(directory: Path) -> dict[str, str]:
    from lrlab.store import Store

    store = Store.open(directory)
    try:
        return store.meta()
    finally:
        store.close()


def data_warnings(directory: Path) -> Lines:
    """The stored class counts' warnings: the held-out part lacks a class, or its shares are off."""
    from lrlab import data

    return data.balance_warnings(_meta(directory))


UNRELIABLE = ("The validation numbers above are unreliable here: the validation set's classes "
              "do not match the training set's (see the warning).")


def recommendation_lines(directory: Path) -> Lines:
    import json

    recs = json.loads(_meta(directory).get("recommendation", "[]"))
    out = []
    for r in recs:
        head = f"[{r['group']}] " if len(recs) > 1 else ""
        out.append(f"- {head}{r['text']}")
    if out and data_warnings(directory):
        out.append("  " + UNRELIABLE.replace("above", "behind this recommendation"))
    return (["Recommendation:"] + out) if out else []


def header(directory: Path, recipe: Any) -> Lines:
    seed = f" (seed {recipe.seed})" if recipe.seed else ""
    return [f"== {recipe.name}{seed}: {recipe.question}", f"   experiment: {directory}"]


SHORT_WORDS = 120
"""The short answer that opens an answer: at most about this many words in all."""


def opening(directory: Path, recipe: Any, short: Sequence[str], uses_val: bool = True) -> Lines:
    """The head of an answer: the title, the short answer (one line per sub-question, each
    with its key number), a blank line, then the experiment folder; the details follow.

    The short answer is the answer's first paragraph (the report's answer box shows it).
    When the validation set's classes do not match training and the short answer quotes
    validation numbers (`uses_val`), it ends by saying so."""
    title, folder = header(directory, recipe)
    tail = [UNRELIABLE] if uses_val and data_warnings(directory) else []
    return [title, *short, *tail, "", folder]


def word_count(lines: Sequence[str]) -> int:
    return sum(len(x.split()) for x in lines)


def history_keys(recs: Sequence[dict[str, Any]], words: Sequence[str]) -> list[str]:
    """History columns (e.g. probe metrics) whose names contain any of `words`."""
    keys = dict.fromkeys(k for r in recs for k in r["history"])
    return [k for k in keys if any(w in k for w in words)]


def generic(directory: Path, recipe: Any) -> Lines:
    recs = records(directory)
    return header(directory, recipe) + verdict_lines(recs) + recommendation_lines(directory)


# ----------------------------------------------------------------------------- final weights


class Members:
    """The stored spec's members, their datasets and final weights (loaded on demand)."""

    def __init__(self, directory: Path) -> None:
        from lrlab import runner
        from lrlab import spec as spec_mod

        self.directory = directory
        self.spec = runner.Result.load(directory).spec
        self.by_id = {m.index: m for m in spec_mod.members(self.spec)}

    def dataset(self, mid: int) -> Any:
        from lrlab import data

        return data.load(self.by_id[mid].data)

    def arch(self, mid: int) -> Any:
        from lrlab import nets

        ds = self.dataset(mid)
        return nets.arch_for(self.by_id[mid].model, ds.X_train.shape[1], ds.n_classes)

    def weights(self, mid: int) -> list[np.ndarray] | None:
        from lrlab.store import Store

        store = Store.open(self.directory)
        try:
            return store.weights(mid)
        finally:
            store.close()

    def init(self, mid: int) -> list[np.ndarray]:
        """The member's weights at initialisation (recomputed from its seed)."""
        from lrlab import nets

        m = self.by_id[mid]
        return [p.numpy() for p in nets.init_member(self.arch(mid), m.model, m.seed)]


def layer_outputs(params: Sequence[np.ndarray], x: np.ndarray, arch: Any
                  ) -> tuple[list[np.ndarray], np.ndarray]:
    """Hidden (z, a) per layer as [(z, a)...] flattened to a list of z's, and output logits."""
    import torch

    from lrlab import nets

    ps = [torch.from_numpy(np.asarray(p, dtype=np.float64))[None] for p in params]
    with torch.no_grad():
        z_out, cache = nets.forward(ps, torch.from_numpy(np.asarray(x, dtype=np.float64)),
                                    arch, keep=True)
    return [z[0].numpy() for _, z, _ in cache[:-1]], z_out[0].numpy()


def predictions(logits: np.ndarray) -> np.ndarray:
    return (logits[:, 0] > 0).astype(int) if logits.shape[1] == 1 else logits.argmax(1)


# ----------------------------------------------------------------------------- seed 000


def prior_loss(y: np.ndarray, n_classes: int) -> float:
    """The cross-entropy of the best constant output: the class frequencies of `y`."""
    p = np.bincount(y, minlength=n_classes) / max(len(y), 1)
    return float(-(p[p > 0] * np.log(p[p > 0])).sum())


PLATEAU_MARGIN = 0.01
"""A run is on the plateau when its final training loss is not at least PLATEAU_MARGIN
(relative) below the prior loss: it does no better than a net that outputs the class
frequencies whatever the input."""


def _spread(logits: np.ndarray) -> float:
    """How much the output depends on the input: std over samples, mean over output units."""
    return float(logits.std(0).mean())


def _dead(zs: Sequence[np.ndarray]) -> float:
    """Share of hidden ReLU units whose pre-activation is <= 0 on every sample."""
    return float(np.mean(np.concatenate([(z <= 0).all(0) for z in zs])))


def _dead_layer(zs: Sequence[np.ndarray]) -> bool:
    """Some hidden layer is dead as a whole: every unit <= 0 on every sample, so the output is
    the same for every input and no gradient reaches any layer below it, ever again."""
    return any(bool((z <= 0).all()) for z in zs)


LEARNED_ACC = 0.5
"""A run learned when its final validation accuracy is above this (chance is 0.25 on the four
balanced blobs): the measure the fidelity suite compares with real Keras."""


def _last_hidden(params: Sequence[np.ndarray], x: np.ndarray, arch: Any
                 ) -> tuple[np.ndarray, float]:
    """The last hidden layer's biases, and the typical size of what its inputs add to its
    pre-activations (std over the points of W a, median over its units)."""
    zs, _ = layer_outputs(params, x, arch)
    b = np.asarray(params[2 * (len(zs) - 1) + 1]).ravel()
    return b, float(np.median((zs[-1] - b).std(0)))


def _signal(params: Sequence[np.ndarray], x: np.ndarray, arch: Any) -> list[float]:
    """Std of each hidden layer's outputs over the points (mean over units)."""
    zs, _ = layer_outputs(params, x, arch)
    return [float(np.maximum(z, 0).std(0).mean()) for z in zs]


def _layer_died(hist: dict[str, list[Any]], layer: int) -> int | None:
    """The first recorded epoch at which the probes saw hidden layer `layer` entirely dead."""
    for e, v in zip(hist.get("epoch", []), hist.get(f"dead_frac_l{layer}", [])):
        if v is not None and v >= 1.0:
            return int(e)
    return None


def _blobs_rows(directory: Path) -> tuple[list[dict[str, Any]], float | None]:
    """One row per member: its record, measurements from its init and final weights."""
    recs = records(directory)
    ms = Members(directory)
    rows = []
    prior = None
    for r in recs:
        mid = r["id"]
        w = ms.weights(mid)
        ds = ms.dataset(mid)
        arch = ms.arch(mid)
        prior = prior_loss(ds.y_train, ds.n_classes)
        row: dict[str, Any] = {"rec": r, "member": r["member"], "layers": arch.n_layers - 1,
                               "shuffle": r["member"].get("shuffle",
                                                          ms.by_id[mid].train.shuffle)}
        init = ms.init(mid)
        zs0, out0 = layer_outputs(init, ds.X_train, arch)
        row.update(dead0=_dead(zs0), spread0=_spread(out0), signal0=_signal(init, ds.X_train,
                                                                            arch),
                   input_std=float(np.asarray(ds.X_train).std(0).mean()),
                   last_in0=_last_hidden(init, ds.X_train, arch)[1])
        if w is not None:
            zs, out_tr = layer_outputs(w, ds.X_train, arch)
            row.update(dead=_dead(zs), spread=_spread(out_tr), dead_layer=_dead_layer(zs))
            x_eval = ds.X_val if len(ds.X_val) else ds.X_train
            pred = predictions(layer_outputs(w, x_eval, arch)[1])
            row["share"] = float(np.bincount(pred, minlength=ds.n_classes).max() / len(pred))
            b, _ = _last_hidden(w, ds.X_train, arch)
            row.update(bias_last=float(b.mean()), bias_last_max=float(b.max()))
        loss = r["final"]["train_loss"]
        row["stuck"] = r["status"] == "ok" and loss is not None and \
            loss >= (1 - PLATEAU_MARGIN) * prior
        acc = r["final"]["val_acc"]
        row["learned"] = r["status"] == "ok" and acc is not None and acc > LEARNED_ACC
        row["died_at"] = _layer_died(r["history"], row["layers"])
        rows.append(row)
    return rows, prior


def _cell(rows: Sequence[dict[str, Any]], pre: str, lr: float, shuffle: str | None = None
          ) -> list[dict[str, Any]]:
    return [x for x in rows if x["member"].get("preprocess", "none") == pre
            and x["member"].get("lr") == lr and (shuffle is None or x["shuffle"] == shuffle)]


def _k(g: Sequence[dict[str, Any]]) -> str:
    return f"{sum(x['learned'] for x in g)}/{len(g)}"


def _blobs_direct(rows: list[dict[str, Any]], prior: float | None) -> Lines:
    """The direct answer to each sub-question, one short paragraph each, numbers from rows.
    Sub-questions whose configuration is not in the sweep are left out."""
    orders = list(dict.fromkeys(x["shuffle"] for x in rows))
    asked = "epoch" if "epoch" in orders else orders[0]  # the question's Keras reshuffles
    how = "a new sample order every epoch as the question ran" if asked == "epoch" else \
        f"shuffle = {asked}"
    out = [f"Direct answer (learned: final validation accuracy above 0.5; {how}):"]
    raw5, raw001 = _cell(rows, "none", 0.5, asked), _cell(rows, "none", 0.001, asked)
    if raw5:
        stuck = [x for x in raw5 if not x["learned"]]
        dead = [x for x in stuck if x.get("dead_layer")]
        line = f"- lr 0.5: {_k(raw5)} raw seeds learn"
        if stuck:
            why = (f" (biases {_f(_median(x.get('bias_last') for x in dead), 1)} vs inputs "
                   f"~{_f(_median(x['last_in0'] for x in raw5), 1)})" if dead else "")
            loss = _median(x["rec"]["final"]["train_loss"] for x in stuck)
            line += (f"; {len(dead)}/{len(stuck)} others lose a whole hidden layer{why}, "
                     f"stalling at the class-frequency loss {_f(loss)}: stuck, not overshooting.")
        out.append(line if stuck else line + ".")
    if raw001:
        sig = _median(x["signal0"][0] / max(x["signal0"][-1], 1e-30) for x in raw001)
        shrink = sig ** (1 / max(len(raw001[0]["signal0"]) - 1, 1)) if sig else None
        out.append(
            f"- lr 0.001: loss still {_f(_median(x['rec']['final']['train_loss'] for x in raw001))}"
            f" after {len(raw001[0]['rec']['history']['epoch']) - 1} epochs: the signal shrinks "
            f"~{_f(shrink, 2)}x per layer, so tiny steps never make the output depend on the "
            f"input: one class (share {_f(_median(x.get('share') for x in raw001), 2)}).")
    std5 = _cell(rows, "standardize", 0.5, asked)
    if std5 and raw5:
        ratio = _median(x["input_std"] for x in raw5) / max(
            _median(x["input_std"] for x in std5) or 1e-30, 1e-30)
        line = (f"- Standardizing shrinks inputs ~{_f(ratio, 2)}x, weakening deep signals: "
                f"at lr 0.5 {_k(std5)} learn (raw {_k(raw5)})")
        std1, raw1 = _cell(rows, "standardize", 0.1, asked), _cell(rows, "none", 0.1, asked)
        out.append(line + (f", at 0.1 {_k(std1)} (raw {_k(raw1)})." if std1 and raw1 else "."))
    learned = [x for x in rows if x["learned"] and x.get("dead") is not None]
    whole = [x for x in rows if x.get("dead_layer")]
    if learned and whole:
        out.append(
            f"- Dead ReLUs: single ones are harmless (learners keep "
            f"{_pct(_median(x['dead'] for x in learned))} dead); a dead layer is fatal "
            f"({sum(not x['learned'] for x in whole)}/{len(whole)} runs failed).")
    if "epoch" in orders and "once" in orders:
        e4, o4 = _cell(rows, "none", 0.4, "epoch"), _cell(rows, "none", 0.4, "once")
        if e4 and o4:
            def late(g: list[dict[str, Any]]) -> int:
                return sum(x["died_at"] is not None and x["died_at"] > 1 for x in g)

            out.append(
                f"- Sample order: raw lr 0.4 learns in {_k(e4)} seeds reshuffled every epoch "
                f"(unseeded Keras) vs {_k(o4)} with one order reused (seeded Keras 3.15 on "
                f"TensorFlow); reshuffling kills the last hidden layer later in {late(e4)} vs "
                f"{late(o4)} runs.")
    return out


def _order_lines(rows: list[dict[str, Any]]) -> Lines:
    """Per configuration, what the data order did: learned seeds, when the last hidden layer
    died (from the dead-unit probe), and where its biases ended (from the final weights)."""
    orders = list(dict.fromkeys(x["shuffle"] for x in rows))
    if len(orders) < 2:
        return []
    L = rows[0]["layers"]
    out = [
        f"Sample order (shuffle): per configuration, seeds that learned; runs whose last hidden "
        f"layer (layer {L}) was entirely dead at epoch 1 and later (probe dead_frac_l{L}, "
        "recorded at epochs 0-10 then every 20); the median final mean bias of that layer in "
        "runs that learned and in runs that did not (it starts at 0)."]
    for pre, lr in sorted({(x["member"].get("preprocess", "none"), x["member"].get("lr"))
                           for x in rows}, key=lambda k: (k[0], -(k[1] or 0))):
        for order in orders:
            g = _cell(rows, pre, lr, order)
            if not g:
                continue
            at1 = sum(x["died_at"] == 1 for x in g)
            later = [x["died_at"] for x in g if x["died_at"] is not None and x["died_at"] > 1]
            yes = [x.get("bias_last") for x in g if x["learned"]]
            no = [x.get("bias_last") for x in g if not x["learned"]]
            out.append(
                f"- {pre:<11} lr {lr:<6g} {order:<5}: learned {_k(g):>5}; layer dead at epoch "
                f"1: {at1}, later: {len(later)}"
                + (f" (median epoch {_f(_median(later), 3)})" if later else "")
                + f"; bias: learned {_f(_median(yes), 2)}, not {_f(_median(no), 2)}")
    out.append(
        "In plain words: on the plateau the output ignores the input, so each minibatch nudges "
        "the last hidden layer's biases up or down by the mix of classes it happens to hold. "
        "Over an epoch the nudges cancel, but within it the biases wander, and a unit whose "
        "bias dips below what its weak inputs can lift outputs 0 for every point and never "
        "gets a gradient again. The first epoch's order is the same under both settings, so "
        "the units lost in epoch 1 are the same. After that, one reused order replays nearly "
        "the walk the survivors already lived through; a new order each epoch is a new walk "
        "and a new chance to die, and over 200 epochs the survivors of more runs die before "
        "the net leaves the plateau.")
    return out


def blobs(directory: Path, recipe: Any) -> Lines:
    """Seed 000: the direct answer to each sub-question, then per lr, preprocessing and data
    order: accuracy, one-class collapse, the plateau of a net whose output ignores its input,
    dead ReLUs (from the stored final weights) and what the order did (from the probes)."""
    rows, prior = _blobs_rows(directory)
    recs = [x["rec"] for x in rows]
    out = header(directory, recipe) + _blobs_direct(rows, prior) + [""]
    out.append(
        "Measurements, median over seeds. loss: final training loss; a net that outputs the "
        f"class frequencies whatever the input scores {_f(prior, 4)} (ln 4 = 1.386 for 4 equal "
        "classes). plateau: runs ending no more than 1% below that loss. dead layer: runs in "
        "which a whole hidden layer outputs 0 for every point. 1-class: share of validation "
        "points given the most-predicted class (1.0 = one class for every point). spread: std "
        "of the output logits over the training points (how much the output depends on the "
        "input), at init and at the end. dead: hidden ReLUs that output 0 for every training "
        "point, at init and at the end.")
    orders = list(dict.fromkeys(x["shuffle"] for x in rows))
    head = f"{'order':<7}" if len(orders) > 1 else ""
    out.append(f"{'preprocess':<12}{'lr':>6}  {head}{'train acc':>9}  {'val acc':>7}  "
               f"{'loss':>6}  {'plateau':>7}  {'dead layer':>10}  {'1-class':>7}  "
               f"{'spread 0':>8}  {'spread':>7}  {'dead 0':>6}  {'dead':>6}  verdicts")
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for row in rows:
        m = row["member"]
        groups.setdefault((m.get("preprocess", "none"), m.get("lr", 0.0), row["shuffle"]),
                          []).append(row)
    for (pre, lr, order), g in sorted(groups.items(),
                                      key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])):
        def med(key: str, g: list[dict[str, Any]] = g) -> float | None:
            return _median(x.get(key) for x in g)

        fin = [x["rec"]["final"] for x in g]
        col = f"{order:<7}" if len(orders) > 1 else ""
        out.append(
            f"{pre:<12}{lr:>6g}  {col}{_f(_median(f['train_acc'] for f in fin)):>9}  "
            f"{_f(_median(f['val_acc'] for f in fin)):>7}  "
            f"{_f(_median(f['train_loss'] for f in fin)):>6}  "
            f"{sum(x['stuck'] for x in g):>4}/{len(g):<2}  "
            f"{sum(bool(x.get('dead_layer')) for x in g):>7}/{len(g):<2}  {_f(med('share')):>7}  "
            f"{_f(med('spread0'), 2):>8}  {_f(med('spread'), 2):>7}  {_pct(med('dead0')):>6}  "
            f"{_pct(med('dead')):>6}  {label_counts([x['rec'] for x in g])}")
    learned = [x for x in rows if not x["stuck"] and x["rec"]["status"] == "ok"
               and x.get("dead") is not None]
    stuck = [x for x in rows if x["stuck"] and x.get("dead") is not None]
    if learned and stuck:
        out.append(
            f"Dead ReLUs vs outcome: the {len(learned)} runs that left the plateau end with a "
            f"median {_pct(_median(x['dead'] for x in learned))} dead units, the "
            f"{len(stuck)} runs on it with {_pct(_median(x['dead'] for x in stuck))}, and "
            f"{sum(bool(x.get('dead_layer')) for x in stuck)} of those have a whole layer dead; "
            "at init "
            f"{_pct(_median(x['dead0'] for x in rows))} are dead already (zero biases, inputs "
            "of one sign).")
    for pre in sorted({k[0] for k in groups}):
        sp = _median(x["spread0"] for x in rows if x["member"].get("preprocess", "none") == pre)
        out.append(f"Output spread at init with preprocess={pre}: {_f(sp, 3)} (median).")
    out += _order_lines(rows)
    out += verdict_lines(recs) + recommendation_lines(directory)
    return out


# ----------------------------------------------------------------------------- seed 001


def gradcheck_lines(example: Path | None, res: Any = None) -> Lines:
    """The gradient check of the question's own numpy network (and of its corrected copy);
    `res`: its `gradcheck.check_file` result when already computed."""
    if example is None or not example.is_file():
        return []
    from lrlab.gradcheck import check_file

    out = [f"Are the gradients calculated wrong? `lrlab gradcheck {example}` on the "
           "question's own back_prop:"]
    res = check_file(example) if res is None else res
    out += ["    " + line for line in res.lines()]
    if res.wrong:
        out.append(f"  -> wrong: {', '.join(res.wrong)} (db1 = np.sum(dZ1, keepdims=True) sums "
                   "over units AND samples; it needs axis=1). Every other array agrees with "
                   "finite differences.")
    fixed = example.with_name(example.stem + "_fixed.py")
    if fixed.is_file():
        res2 = check_file(fixed)
        out.append(f"  with axis=1 put back ({fixed.name}): "
                   + ("all arrays ok" if res2.ok else "still wrong: " + ", ".join(res2.wrong)))
    out.append("  lrlab trains this network with its own checked backward pass (no db1 bug), "
               "so a spike below comes from the learning rate, not from wrong gradients.")
    return out


SPIKE_WINDOW = 10
"""Epochs after the start in which a rise of the training loss above its initial value counts
as the early spike."""


def _spike_stats(g: Sequence[dict[str, Any]], sharp: str | None) -> dict[str, Any]:
    """Medians over the seeds of one configuration: loss at init, the highest training loss
    in epochs 1..SPIKE_WINDOW and its epoch, seeds whose loss rose above its start, the final
    training loss, and the sharpness at init and at the end (when probed)."""
    starts, peaks, when, spiked, finals, s0, s_end = [], [], [], 0, [], [], []
    for r in g:
        loss = r["history"]["train_loss"]
        start = loss[0]
        window = [(x if x is not None else math.inf) for x in loss[1:SPIKE_WINDOW + 1]]
        if start is None or not window:
            continue
        k = int(np.argmax(window))
        starts.append(start)
        peaks.append(window[k])
        when.append(k + 1)
        spiked += window[k] > start
        finals.append(r["final"]["train_loss"] if r["status"] == "ok" else None)
        if sharp:
            col = r["history"][sharp]
            s0.append(col[0])
            s_end.append(next((v for v in reversed(col) if v is not None), None))
    return {"start": _median(starts), "peak": _median(peaks), "when": _median(when),
            "spiked": spiked, "n": len(g), "final": _median(finals),
            "sharp0": _median(s0), "sharp_end": _median(s_end)}


def _tanh_short(recs: Sequence[dict[str, Any]], sharp: str | None, res: Any) -> Lines:
    """Seed 001 in a few lines: why the loss rises at a larger lr, what larger initial weights
    do, and whether the gradients are wrong; every number from the store or the check."""
    stats: dict[tuple[float, float], dict[str, Any]] = {}
    for _label, g in group(recs).items():
        m = g[0]["member"]
        stats[(float(m.get("init_scale", 1.0)), float(m.get("lr", 0.0)))] = \
            _spike_stats(g, sharp)
    base = sorted(lr for sc, lr in stats if sc == 1.0) or sorted({lr for _, lr in stats})
    if not base:
        return []
    scale = 1.0 if any(sc == 1.0 for sc, _ in stats) else min(sc for sc, _ in stats)
    lo = 0.01 if 0.01 in base else base[0]
    hi = 1.0 if 1.0 in base and lo != 1.0 else base[-1]
    a, b = stats[(scale, lo)], stats[(scale, hi)]
    out = []
    rose = f"rose above its start ({_f(b['start'])}) in {b['spiked']}/{b['n']} seeds"
    if b["spiked"]:
        rose += f", to {_f(b['peak'])} at epoch {_f(b['when'], 2)}"
    line = (f"Why the loss rises: at lr {hi:g} the training loss {rose}, and ends at "
            f"{_f(b['final'])}; at lr {lo:g} it rose in {a['spiked']}/{a['n']}.")
    first = next((lr for lr in base if stats[(scale, lr)]["spiked"] * 2 > stats[(scale, lr)]
                  ["n"]), None)
    if sharp and b["sharp0"]:
        line += (f" A step overshoots along curvature above 2/lr: the sharpness at "
                 f"init is {_f(b['sharp0'])}, so lrs above {2 / b['sharp0']:.3g} overshoot")
        line += (f"; most seeds first rise at lr {first:g}." if first is not None
                 else "; no swept lr made most seeds' loss rise.")
    elif first is not None:
        line += f" Most seeds' loss first rises at lr {first:g}: the step overshoots the valley."
    out.append(line)
    big = max(sc for sc, _ in stats)
    if big != scale and (big, lo) in stats:
        c = stats[(big, lo)]
        out.append(f"Larger initial weights: x{big:g} raises the loss at init from "
                   f"{_f(a['start'])} to {_f(c['start'])}; at lr {lo:g} it ends at "
                   f"{_f(c['final'])} against {_f(a['final'])}.")
    if res is not None:
        good = [row for row in res.rows if row.ok]
        bad = [row for row in res.rows if not row.ok]
        if bad:
            worst = ", ".join(f"{row.name} (relative error {row.rel_error:.2g})" for row in bad)
            out.append(f"Wrong gradients? Yes, one: {worst}: np.sum without axis=1; the other "
                       f"{len(good)} agree with finite differences (worst "
                       f"{max((row.rel_error for row in good), default=0.0):.1g}). lrlab's "
                       "gradients are checked, so a rise here is the lr's doing.")
        else:
            out.append(f"Wrong gradients? No: all {len(good)} arrays agree with finite "
                       "differences.")
    return out


def tanh(directory: Path, recipe: Any) -> Lines:
    """Seed 001: the early loss spike per lr and init scale, and the gradient check."""
    recs = records(directory)
    sharp_keys = history_keys(recs, ("sharpness",))
    sharp = sharp_keys[0] if sharp_keys else None
    example = recipe.example_path
    res = None
    if example is not None and example.is_file():
        from lrlab.gradcheck import check_file

        res = check_file(example)
    out = opening(directory, recipe, _tanh_short(recs, sharp, res), uses_val=False)
    out += gradcheck_lines(example, res)
    out.append(f"The early spike (full-batch GD; medians over seeds): loss at init, the highest "
               f"training loss in epochs 1-{SPIKE_WINDOW} and when, the share of seeds whose "
               "loss rose above its start, the final training loss."
               + (" Sharpness: the top eigenvalue of the loss Hessian (lrlab's probe), at init "
                  "and at the end, against 2/lr: gradient descent is unstable along that "
                  "direction while sharpness > 2/lr, and a spike is the loss climbing out of "
                  "the sharp region until the curvature it sits in is below 2/lr." if sharp
                  else ""))
    head = (f"{'init_scale':>10}{'lr':>7}  {'start':>7}  {'peak':>8}  {'epoch':>5}  "
            f"{'spiked':>6}  {'final':>7}  ")
    out.append(head + (f"{'sharp 0':>8}  {'sharp end':>9}  {'2/lr':>7}  " if sharp else "")
               + "verdicts")
    for _label, g in _sorted_groups(recs, ("init_scale", "lr")):
        m = g[0]["member"]
        st = _spike_stats(g, sharp)
        lr = float(m.get("lr", 0.0))
        row = (f"{_value(m.get('init_scale', 1.0)):>10}{lr:>7g}  {_f(st['start']):>7}  "
               f"{_f(st['peak']):>8}  {_f(st['when'], 2):>5}  "
               f"{st['spiked']:>3}/{len(g):<2}  {_f(st['final']):>7}  ")
        if sharp:
            row += f"{_f(st['sharp0']):>8}  {_f(st['sharp_end']):>9}  {2 / lr:>7.3g}  "
        out.append(row + label_counts(g))
    asked = [r for r in recs if r["member"].get("lr") in (0.01, 1.0)
             and r["member"].get("init_scale", 1.0) == 1.0]
    out += verdict_lines(asked or recs, "lrlab's verdicts for the question's lrs (0.01 and 1)")
    out += recommendation_lines(directory)
    return out


def _sorted_groups(recs: Sequence[dict[str, Any]], keys: Sequence[str]
                   ) -> list[tuple[str, list[dict[str, Any]]]]:
    def order(item: tuple[str, list[dict[str, Any]]]) -> tuple:
        m = item[1][0]["member"]
        return tuple(str(m.get(k)) if not isinstance(m.get(k), (int, float)) else m.get(k)
                     for k in keys)

    return sorted(group(recs).items(), key=order)


# ----------------------------------------------------------------------------- seed 003


def _n_test(ms: Members, mid: int) -> int:
    return int(len(ms.dataset(mid).y_val))


def nielsen_lines(hist: dict[str, list[Any]], n: int, phase: int | None = None) -> Lines:
    """Nielsen's per-epoch printout: "Epoch k: N / n", k from 0 within the phase."""
    out = []
    phases = hist.get("phase") or [None] * len(hist["epoch"])
    k = 0
    for ep, acc, ph in zip(hist["epoch"], hist["val_acc"], phases):
        if ep == 0 or (phase is not None and ph is not None and int(ph) != phase):
            continue
        out.append(f"Epoch {k}: {_correct(acc, n)} / {n}")
        k += 1
    return out


def _correct(acc: float | None, n: int) -> str:
    return "?" if acc is None else str(int(round(acc * n)))


def nielsen(directory: Path, recipe: Any) -> Lines:
    """Seed 003: Nielsen's printout per seed, and the accuracies after epochs 1 and 5."""
    recs = records(directory)
    ms = Members(directory)
    n = _n_test(ms, recs[0]["id"]) if recs else 0
    out = opening(directory, recipe, _nielsen_short(recs, ms, n))
    for r in recs:
        out.append(f"seed {r['member'].get('seed')}: net.SGD(training_data, "
                   f"{len(r['history']['epoch']) - 1}, 10, 3.0, test_data=test_data)")
        out += ["    " + line for line in nielsen_lines(r["history"], n)]
    out.append("Test accuracy (Nielsen's 'Epoch k' is after k+1 epochs of training):")
    for e in (1, 5):
        vals = [(r["member"].get("seed"), r["history"]["val_acc"][e])
                for r in recs if len(r["history"]["val_acc"]) > e]
        if vals:
            out.append(f"- after epoch {e} ('Epoch {e - 1}'): " + ", ".join(
                f"seed {s}: {_correct(a, n)} / {n}" for s, a in vals))
    out.append("- final: " + ", ".join(
        f"seed {r['member'].get('seed')}: {_correct(r['final']['val_acc'], n)} / {n}"
        for r in recs))
    out.append("The question's own run (784-20-10): Epoch 0: 8992 / 10000, Epoch 1: 9181, "
               "Epoch 4: 9284.")
    out += verdict_lines(recs)
    return out


def _over_seeds(xs: Sequence[Any]) -> str:
    """"median of 3 seeds, 8990-9102" (the range over seeds), or "1 seed"."""
    if len(xs) == 1:
        return "1 seed"
    return f"median of {len(xs)} seeds, {min(xs)}-{max(xs)}"


def _nielsen_short(recs: Sequence[dict[str, Any]], ms: Members, n: int) -> Lines:
    """Seed 003, the fresh net: accuracy after one epoch and why one epoch is enough."""
    if not recs:
        return []
    one = [int(round(r["history"]["val_acc"][1] * n)) for r in recs
           if len(r["history"]["val_acc"]) > 1 and r["history"]["val_acc"][1] is not None]
    fin = [int(round(r["final"]["val_acc"] * n)) for r in recs
           if r["final"]["val_acc"] is not None]
    m = ms.by_id[recs[0]["id"]]
    n_train = len(ms.dataset(recs[0]["id"]).y_train)
    steps = math.ceil(n_train / m.train.batch_size) if m.train.batch_size else 1
    out = []
    if one:
        out.append(f"Accurate after one epoch: 'Epoch 0' classifies {int(np.median(one))} / {n} "
                   f"test images ({_over_seeds(one)}).")
    out.append(f"Why so fast: one epoch is already {steps:,} SGD steps ({n_train:,} images in "
               f"batches of {m.train.batch_size}) at eta {m.train.lr:g}, each moving every "
               "weight.")
    if fin:
        out.append(f"After all {len(recs[0]['history']['epoch']) - 1} epochs: "
                   f"{int(np.median(fin))} / {n} ({_over_seeds(fin)}).")
    return out


SATURATED = 0.02
"""A sigmoid unit is saturated on a sample when its output is below SATURATED or above
1 - SATURATED: its derivative a(1 - a) is then under 0.0196, less than a twelfth of its
largest value 0.25, so almost no gradient passes through it."""


def saturation(params: Sequence[np.ndarray], x: np.ndarray, arch: Any) -> dict[str, float]:
    """Hidden and output sigmoid saturation on x, and the mean derivative a(1-a) per layer."""
    zs, logits = layer_outputs(params, x, arch)
    a_h = 1 / (1 + np.exp(-zs[0]))
    a_o = 1 / (1 + np.exp(-logits))
    sat_h = (a_h < SATURATED) | (a_h > 1 - SATURATED)
    return {
        "hidden_saturated": float(sat_h.mean()),
        "hidden_units_stuck": float((sat_h.mean(0) >= 0.95).mean()),
        "hidden_mean_slope": float((a_h * (1 - a_h)).mean()),
        "output_saturated": float(((a_o < SATURATED) | (a_o > 1 - SATURATED)).mean()),
        "output_mean_slope": float((a_o * (1 - a_o)).mean()),
        "w1_rms": float(np.sqrt(np.mean(np.asarray(params[0], dtype=np.float64) ** 2))),
        "w2_rms": float(np.sqrt(np.mean(np.asarray(params[2], dtype=np.float64) ** 2))),
    }


def break_recover(directory: Path, recipe: Any) -> Lines:
    """Seed 003: break with lr 300, recover at lr 3.0: accuracies and saturation."""
    recs = records(directory)
    ms = Members(directory)
    if not recs:
        return header(directory, recipe)
    n = _n_test(ms, recs[0]["id"])
    sp = ms.spec
    p2 = dict(sp.phases[0].overrides) if sp.phases else {}
    ds = ms.dataset(recs[0]["id"])
    arch = ms.arch(recs[0]["id"])
    sat = {}  # (member id, "fresh init" | "broken+recovered") -> saturation()
    for r in recs:
        w = ms.weights(r["id"])
        for label, params in (("fresh init", ms.init(r["id"])), ("broken+recovered", w)):
            if params is not None:
                sat[(r["id"], label)] = saturation(params, ds.X_val, arch)
    out = opening(directory, recipe, _break_short(recs, sat, n, sp, p2))
    out.append(f"phase 1: SGD(training_data, {sp.train.epochs}, {sp.train.batch_size}, "
               f"{sp.train.lr:g}); phase 2 from those weights: SGD(training_data, "
               f"{p2.get('epochs', sp.train.epochs)}, {p2.get('batch_size')}, {p2.get('lr')})")
    summary = []
    for r in recs:
        h = r["history"]
        seed = r["member"].get("seed")
        out.append(f"seed {seed}, phase 1 (break):")
        out += ["    " + line for line in nielsen_lines(h, n, phase=0)]
        out.append(f"seed {seed}, phase 2 (recover):")
        out += ["    " + line for line in nielsen_lines(h, n, phase=1)]
        ph = h.get("phase") or []
        acc = h["val_acc"]
        p1 = [a for a, p, e in zip(acc, ph, h["epoch"]) if e > 0 and p == 0]
        p2a = [a for a, p in zip(acc, ph) if p == 1]
        summary.append((seed, p1[-1] if p1 else None, p2a[0] if p2a else None,
                        p2a[-1] if p2a else None,
                        max((a for a in p2a if a is not None), default=None)))
    out.append(f"Accuracy on the {n:,} test images:")
    for seed, broken, first, last, best in summary:
        out.append(f"- seed {seed}: broken {_correct(broken, n)} / {n}; after 1 recovery "
                   f"epoch {_correct(first, n)}; after the last {_correct(last, n)} (best "
                   f"{_correct(best, n)})")
    out.append("The question's run: broken ~3300-3900 / 10000, then 3905 ... 3966 after 30 "
               "recovery epochs; a fresh net: 8992 after one epoch.")
    out.append(f"Why no recovery (saturation on the test images; a sigmoid counts as saturated "
               f"when its output is below {SATURATED} or above {1 - SATURATED}, where its slope "
               "a(1-a) < 0.02):")
    out.append(f"{'':<22}{'hidden sat.':>11}  {'stuck units':>11}  {'hidden slope':>12}  "
               f"{'output sat.':>11}  {'|W1| rms':>8}  {'|W2| rms':>8}")
    for r in recs:
        for label in ("fresh init", "broken+recovered"):
            if (r["id"], label) not in sat:
                continue
            s = sat[(r["id"], label)]
            out.append(f"  seed {r['member'].get('seed')} {label:<15}"
                       f"{_pct(s['hidden_saturated']):>11}  {_pct(s['hidden_units_stuck']):>11}"
                       f"  {s['hidden_mean_slope']:>12.4f}  {_pct(s['output_saturated']):>11}"
                       f"  {s['w1_rms']:>8.3g}  {s['w2_rms']:>8.3g}")
    out.append("  (stuck unit: saturated on >= 95% of the test images; its incoming weights get "
               "almost no gradient, so lr 3.0 cannot move them back within 30 epochs.)")
    probes = history_keys(recs, ("saturat", "dead", "slope"))
    if probes:
        out.append("Probe measurements per phase (median over seeds, last epoch of each phase):")
        for key in probes:
            vals = []
            for phase in (0, 1):
                col = [_last_of_phase(r["history"], key, phase) for r in recs]
                vals.append(_f(_median(col)))
            out.append(f"- {key}: after break {vals[0]}, after recovery {vals[1]}")
    out += verdict_lines(recs)
    return out


def _phase_accs(h: dict[str, list[Any]]) -> tuple[float | None, float | None, float | None]:
    """Accuracy at the end of phase 1, at the end of phase 2, and the best of phase 2."""
    ph, acc = h.get("phase") or [], h["val_acc"]
    p1 = [a for a, p, e in zip(acc, ph, h["epoch"]) if e > 0 and p == 0 and a is not None]
    p2 = [a for a, p in zip(acc, ph) if p == 1 and a is not None]
    return (p1[-1] if p1 else None, p2[-1] if p2 else None, max(p2) if p2 else None)


def _break_short(recs: Sequence[dict[str, Any]], sat: dict[tuple[int, str], dict[str, float]],
                 n: int, sp: Any, p2: dict[str, Any]) -> Lines:
    """Seed 003, the broken net: how far it recovers, why not further, and why it is no local
    minimum; medians over seeds, saturation from the stored final weights on the test images."""
    accs = [_phase_accs(r["history"]) for r in recs]

    def med(i: int) -> str:
        return _correct(_median(a[i] for a in accs), n)

    def sat_med(label: str, key: str) -> float | None:
        return _median(v[key] for (mid, lab), v in sat.items() if lab == label)

    epochs2 = p2.get("epochs", sp.train.epochs)
    out = [f"No recovery: lr {sp.train.lr:g} (batch {sp.train.batch_size}) leaves the net at "
           f"{med(0)} / {n} test images; {epochs2} epochs at lr {p2.get('lr')} (batch "
           f"{p2.get('batch_size')}) end at {med(1)} (best {med(2)}; "
           f"{'median of ' if len(recs) > 1 else ''}{len(recs)} seed{'s' if len(recs) > 1 else ''}"
           ")."]
    h, h0 = sat_med("broken+recovered", "hidden_saturated"), sat_med("fresh init",
                                                                      "hidden_saturated")
    if h is not None and h0 is not None:
        out.append(
            f"Why: {_pct(h)} of hidden and {_pct(sat_med('broken+recovered', 'output_saturated'))}"
            f" of output sigmoids are saturated (fresh init: {_pct(h0)} and "
            f"{_pct(sat_med('fresh init', 'output_saturated'))}); "
            f"{_pct(sat_med('broken+recovered', 'hidden_units_stuck'))} of hidden units are "
            "stuck.")
        out.append(
            "Not a local minimum but a flat plateau: backprop multiplies each gradient by the "
            f"sigmoid slope, whose hidden mean is "
            f"{sat_med('broken+recovered', 'hidden_mean_slope'):.3g} against "
            f"{sat_med('fresh init', 'hidden_mean_slope'):.3g} fresh, so lr "
            f"{p2.get('lr')} barely moves the weights.")
    return out


def _last_of_phase(h: dict[str, list[Any]], key: str, phase: int) -> float | None:
    vals = [v for v, p, e in zip(h.get(key, []), h.get("phase", []), h["epoch"])
            if p == phase and e > 0 and v is not None]
    return vals[-1] if vals else None


# ----------------------------------------------------------------------------- seed 004


def iris(directory: Path, recipe: Any) -> Lines:
    """Seed 004: the article's printout per lr, and the lr actually reached with decay."""
    from lrlab.store import Store

    recs = records(directory)
    store = Store.open(directory)
    try:
        lr_series = {r["id"]: store.series(r["id"]).get("lr") or [None] for r in recs}
    finally:
        store.close()
    last_lr = {k: v[-1] for k, v in lr_series.items()}
    groups = sorted(group(recs).values(), key=lambda g: -g[0]["member"].get("lr", 0.0))
    out = opening(directory, recipe, _iris_short(directory, groups, lr_series))
    for g in groups:  # the article's order: l_r = [0.2, 0.1, 0.03, 0.01]
        lr = g[0]["member"].get("lr", 0.0)
        accs = [r["final"]["val_acc"] for r in g]
        med = _median(accs)
        line = (f"Learning Rate: {lr:f} Test Accuracy: {100 * med:.2f}" if med is not None
                else f"Learning Rate: {lr:f} Test Accuracy: -")
        per = ", ".join("-" if a is None else f"{100 * a:.2f}" for a in accs)
        out.append(line + f"   (median of {len(g)} seeds: {per}; final train/val loss "
                   f"{_f(_median(r['final']['train_loss'] for r in g))} / "
                   f"{_f(_median(r['final']['val_loss'] for r in g))}"
                   + (f"; lr at the last step {_f(_median(last_lr[r['id']] for r in g), 4)}"
                      if any(not math.isclose(last_lr[r["id"]] or lr, lr, rel_tol=1e-5)
                             for r in g) else "") + ")")
    fig = keras_loss_grid(directory, groups)
    out.append(f"The article's 2x2 figure (Keras' training loss, the running mean over each "
               f"epoch's batches, and validation loss, per lr): {fig}")
    out += verdict_lines(recs) + recommendation_lines(directory)
    return out


def _stored_recommendations(directory: Path) -> list[dict[str, Any]]:
    import json

    try:
        val = json.loads(_meta(directory).get("recommendation", "[]"))
    except ValueError:
        return []
    return [r for r in val if isinstance(r, dict)] if isinstance(val, list) else []


def _iris_short(directory: Path, groups: Sequence[Sequence[dict[str, Any]]],
                lr_series: dict[int, list[Any]]) -> Lines:
    """Seed 004: test accuracy per lr, the recommended lr, verdicts, and what decay did."""
    if not groups:
        return []
    epochs = max(len(r["history"]["epoch"]) - 1 for g in groups for r in g)
    n = max(len(g) for g in groups)
    accs = []
    for g in groups:
        med = _median(r["final"]["val_acc"] for r in g)
        accs.append(f"{g[0]['member'].get('lr', 0.0):g}: "
                    + ("-" if med is None else f"{100 * med:.1f}%"))
    seeds = f"median of {n} seeds" if n > 1 else "1 seed"
    out = [f"Test accuracy after {epochs} epochs ({seeds}): lr " + ", ".join(accs) + "."]
    for rec in _stored_recommendations(directory)[:1]:
        best = rec.get("best_lr")
        g = next((g for g in groups if best is not None
                  and math.isclose(g[0]["member"].get("lr", 0.0), best, rel_tol=1e-9)), None)
        if g is not None:
            acc = [100 * r["final"]["val_acc"] for r in g if r["final"]["val_acc"] is not None]
            span = (f"; its seeds' test accuracy spans {min(acc):.1f}-{max(acc):.1f}%"
                    if len(acc) > 1 else "")
            out.append(f"Best: lr {best:g}, the lowest median validation loss "
                       f"({_f(_median(r['final']['val_loss'] for r in g))}){span}.")
    out.append("Verdicts: " + "; ".join(f"lr {g[0]['member'].get('lr', 0.0):g} "
                                        f"{label_counts(g)}" for g in groups) + ".")
    ratios = [v[-1] / v[0] for v in lr_series.values() if v and v[0] and v[-1] is not None]
    ratio = _median(ratios)
    if ratio is not None and not math.isclose(ratio, 1.0, rel_tol=1e-6):
        steps = _median(len(v) for v in lr_series.values())
        top = groups[0][0]["member"].get("lr", 0.0)
        out.append(f"Decay: by the last of {steps:.0f} steps the lr is {ratio:.3g} x its start "
                   f"(lr {top:g} ends at {top * ratio:.3g}), so late steps are smaller.")
    return out


KERAS_FIGURE = "keras_loss_2x2.png"


def keras_loss_grid(directory: Path, groups: Sequence[Sequence[dict[str, Any]]]) -> Path:
    """The article's figure: one panel per lr (2 columns), Keras' history['loss'] (lrlab's
    `batch_loss`: the mean of the epoch's batch losses) and history['val_loss'] against the
    epoch (1..N, as Keras records them); the median over seeds, each seed as a thin line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, math.ceil(len(groups) / 2))
    fig, axes = plt.subplots(rows, 2, figsize=(12, 4.5 * rows), squeeze=False)
    for ax, g in zip(axes.flat, groups):
        for key, color, label in (("batch_loss", "#1f77b4", "Training Loss"),
                                  ("val_loss", "#ff7f0e", "Validation Loss")):
            curves = [[np.nan if v is None else v for v in r["history"].get(key, [])[1:]]
                      for r in g]
            n = max((len(c) for c in curves), default=0)
            if not n:
                continue
            m = np.full((len(curves), n), np.nan)
            for i, c in enumerate(curves):
                m[i, : len(c)] = c
            ep = np.arange(1, n + 1)
            for row in m:
                ax.plot(ep, row, color=color, lw=0.6, alpha=0.35)
            with np.errstate(all="ignore"):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    ax.plot(ep, np.nanmedian(m, 0), color=color, lw=2, label=label)
        ax.legend(loc="upper right")
        ax.set_title(f"Learning Rate: {g[0]['member'].get('lr', 0.0):.2f}")
        ax.set_xlabel("epoch")
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    fig.tight_layout()
    path = Path(directory) / KERAS_FIGURE
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- seed 002


def tour(directory: Path, recipe: Any) -> Lines:
    """Seed 002: validation-based selection over methods, lrs and networks."""
    recs = records(directory)
    body: Lines = []
    by_cfg = group(recs)
    scored = []
    for label, g in by_cfg.items():
        vl = [r["final"]["val_loss"] if r["status"] == "ok" else None for r in g]
        med_loss = _median(vl) if all(v is not None for v in vl) else None
        scored.append((med_loss if med_loss is not None else math.inf, label, g))
    methods: dict[str, list[Any]] = {}
    for score, _label, g in scored:
        m = g[0]["member"]
        key = config_label(m, ("seed", "lr"))
        methods.setdefault(key, []).append((score, m.get("lr"), g))
    body.append("Validation-based selection: for each method (optimizer, schedule, network) "
                "the lr with the lowest median final validation loss over seeds (a run that "
                "diverged in any seed disqualifies that lr).")
    body.append(f"{'method':<58}{'best lr':>8}  {'val loss':>8}  {'seed range':>17}  "
                f"{'val acc':>7}  verdicts")
    best_rows = []
    for key, items in methods.items():
        score, lr, g = min(items, key=lambda t: t[0])
        acc = _median(r["final"]["val_acc"] for r in g)
        best_rows.append((score, key, lr, acc, g))
    best_rows.sort(key=lambda t: t[0])
    for score, key, lr, acc, g in best_rows:
        vl = [r["final"]["val_loss"] for r in g if r["final"]["val_loss"] is not None]
        rng = f"{min(vl):.4g}-{max(vl):.4g}" if vl else "-"
        body.append(f"{key:<58}{_value(lr) if math.isfinite(score) else '-':>8}  "
                    f"{_f(score if math.isfinite(score) else None, 4):>8}  {rng:>17}  "
                    f"{_f(acc):>7}  {label_counts(g)}")
    if best_rows and math.isfinite(best_rows[0][0]):
        score, key, lr, acc, g = best_rows[0]
        body.append(f"Selected: {key}, lr {_value(lr)}: median val loss {score:.4g}, "
                    f"val acc {_f(acc)}.")
        t = typical(g)
        if t["verdict"]:
            body.append(f"  lrlab's verdict there: {t['verdict']['explanation']}")
        for fam, test in (("fixed-lr SGD", _is(optimizer="sgd", schedule="constant")),
                          ("SGD with a decay schedule", lambda m: m.get("optimizer") == "sgd"
                           and m.get("schedule") != "constant"),
                          ("adaptive (Adagrad/RMSprop/Adam), fixed lr",
                           lambda m: m.get("optimizer") in ("adagrad", "rmsprop", "adam")
                           and m.get("schedule", "constant") == "constant")):
            cand = [t for t in best_rows if test(t[4][0]["member"]) and math.isfinite(t[0])]
            if cand:
                s, k, lr2, a, _ = cand[0]
                body.append(f"- best {fam}: {k}, lr {_value(lr2)}: val loss {s:.4g}, "
                            f"val acc {_f(a)}")
    body.append("Verdicts over every lr, per optimizer:")
    for opt, g in group(recs, [k for k in (recs[0]["member"] if recs else {})
                               if k != "optimizer"]).items():
        body.append(f"- {opt}: {label_counts(g)}")
    return opening(directory, recipe, _tour_short(recs, best_rows)) + body


def _tour_short(recs: Sequence[dict[str, Any]], best_rows: Sequence[tuple]) -> Lines:
    """Seed 002: the winner on validation loss, the best of each family, and what too high
    and too low lrs did; `best_rows`: (score, method, lr, val acc, runs), best first."""
    ok = [t for t in best_rows if math.isfinite(t[0])]
    if not ok:
        return ["No method trained without diverging in some seed at any lr."]
    score, key, lr, acc, g = ok[0]
    out = [f"Winner on median final validation loss: {key} at lr {_value(lr)} "
           f"(val loss {score:.3g}, val acc {_f(acc)}, {len(g)} seed{'s' if len(g) > 1 else ''})."]
    fams = []
    for fam, test in (("fixed-lr SGD", _is(optimizer="sgd", schedule="constant")),
                      ("SGD with decay", lambda m: m.get("optimizer") == "sgd"
                       and m.get("schedule") != "constant"),
                      ("adaptive", lambda m: m.get("optimizer") in ("adagrad", "rmsprop", "adam")
                       and m.get("schedule", "constant") == "constant")):
        cand = [t for t in ok if test(t[4][0]["member"])]
        if cand:
            m = cand[0][4][0]["member"]
            what = {"SGD with decay": m.get("schedule"), "adaptive": m.get("optimizer")}.get(fam)
            fams.append(f"{fam}{' (' + str(what) + ')' if what else ''} lr {_value(cand[0][2])}, "
                        f"val acc {_f(cand[0][3])}")
    if fams:
        out.append("Best per family: " + "; ".join(fams) + ".")
    lrs = sorted({r["member"]["lr"] for r in recs if isinstance(r["member"].get("lr"),
                                                                   (int, float))})
    div = [r for r in recs if r["status"] != "ok" or (r["verdict"] or {}).get("label")
           == "diverged"]
    if div:
        out.append(f"Too high: {len(div)} of {len(recs)} runs diverged, all at lr >= "
                   f"{min(r['member'].get('lr', math.inf) for r in div):g}.")
    if len(lrs) > 1:
        low = [r for r in recs if r["member"].get("lr") == lrs[0]]
        out.append(f"Too low: at lr {lrs[0]:g} the median val acc is "
                   f"{_f(_median(r['final']['val_acc'] for r in low))} "
                   f"({label_counts(low)}).")
    return out


def _is(**want: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda m: all(m.get(k, v) == v for k, v in want.items())
