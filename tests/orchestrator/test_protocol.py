"""Protocol honesty without Ray: which clips may choose what each fold reports, the leave-fold-out choice itself,
the leakage check, fingerprints, honest metric names and labels, the paired comparison with the base config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ifdd.data.manifest import fold_split, listed_ids, load_manifest
from orchestrator import protocol
from orchestrator.search.nested import choose, deploy_scope, selection_scope
from orchestrator.search.results import TrialRow, sign_test
from orchestrator.search.space import load_space

ROOT = Path(__file__).resolve().parents[2]
FOLDS = [1, 2, 3, 4, 5]


@pytest.mark.parametrize("selection", ["val", "test"])
@pytest.mark.parametrize("strategy", ["fold-wise", "cross-fold"])
def test_choice_clips_are_disjoint_from_the_test_split_exactly_when_the_label_says_nested(small_manifest, strategy,
                                                                                          selection):
    df = load_manifest(small_manifest)
    label = protocol.label(strategy, selection)
    for k in FOLDS:
        chosen_on = set().union(*selection_scope(df, strategy, selection, FOLDS, k).values())
        test = listed_ids(df, k, "test")
        assert chosen_on
        assert (not chosen_on & test) == ("nested" in label) == ("optimistic" not in label), (k, label)


def test_the_old_cross_fold_rule_chose_on_the_test_clips_it_reported(small_manifest):
    """DFEW's test splits partition the clips, so every fold's inner-val (the old cross-fold objective) holds some
    of each fold's test clips: the rule the old label called nested fails the check above on every fold."""
    df = load_manifest(small_manifest)
    every_inner_val = set().union(*deploy_scope(df, "val", FOLDS).values())
    for k in FOLDS:
        assert every_inner_val & listed_ids(df, k, "test"), k
        with pytest.raises(protocol.LeakageError, match=f"fold {k}: .* in fold {k}'s test split"):
            protocol.check_leakage(every_inner_val, listed_ids(df, k, "test"), selection="val", fold=k)
    # under paper parity the same overlap is counted, not refused: the label says optimistic
    assert protocol.check_leakage(every_inner_val, listed_ids(df, 1, "test"), selection="test", fold=1) > 0


def _records(df, folds, correct):
    """Per-clip selection records of one trial: right on the clips in ``correct``, wrong elsewhere."""
    out = {}
    for j in folds:
        val = fold_split(df, j, "val")
        labels = val["label"].astype(int).tolist()
        out[j] = {"clip_id": val["clip_id"].tolist(), "label": labels,
                  "pred": [y if c in correct else (y + 1) % 7 for c, y in zip(val["clip_id"], labels, strict=True)]}
    return out


def test_a_trial_that_knows_fold_1s_test_clips_wins_the_pooled_choice_but_not_fold_1s(small_manifest):
    """Trial "leaky" is right only on the other folds' inner-val clips that are fold 1's test clips; trial "plain"
    is right on one fold-1 inner-val clip (of the largest class there, so it adds the least to UAR). Pooled over
    every inner-val clip (the old rule, and the deploy choice) the leaky trial wins; fold 1's nested choice cannot
    see those clips and picks the other."""
    df = load_manifest(small_manifest)
    folds = FOLDS
    space = load_space(ROOT / "search_spaces" / "smoke.yaml").with_folds(tuple(folds), "cross-fold")
    known = set().union(*deploy_scope(df, "val", folds[1:]).values()) & listed_ids(df, 1, "test")
    assert len(known) >= 2
    val1 = fold_split(df, 1, "val")
    one = val1.loc[val1["label"].eq(val1["label"].value_counts().idxmax()), "clip_id"].iloc[0]
    records = {"leaky": _records(df, folds, known), "plain": _records(df, folds, {one})}
    rows = [TrialRow(t, {}, "complete", 2, {}) for t in records]

    pooled = choose(rows, records, deploy_scope(df, "val", folds), space)
    assert pooled.winner.trial_id == "leaky"
    nested = choose(rows, records, selection_scope(df, "cross-fold", "val", folds, 1), space)
    assert nested.winner.trial_id == "plain" and nested.values["leaky"]["val_uar"] == 0.0
    assert not nested.clips & listed_ids(df, 1, "test")
    assert protocol.check_leakage(nested.clips, listed_ids(df, 1, "test"), selection="val", fold=1) == 0


def test_a_record_missing_clips_of_its_split_is_refused(small_manifest):
    df = load_manifest(small_manifest)
    space = load_space(ROOT / "search_spaces" / "smoke.yaml")
    rec = _records(df, [1], set())
    rec[1] = {k: v[1:] for k, v in rec[1].items()}
    with pytest.raises(ValueError, match="fold 1: the selection record lacks 1 clip"):
        choose([TrialRow("t", {}, "complete", 2, {})], {"t": rec}, selection_scope(df, "fold-wise", "val", [1], 1),
               space)


def test_fingerprint_differences_are_named():
    cfg = {"model": {"split_ratio": 0.5}, "data": {"manifest": "/a/m.parquet"}, "train": {"epochs": 2}}
    a = protocol.run_fingerprint(cfg, 1, "val", "f" * 64)
    moved = {**cfg, "data": {"manifest": "/elsewhere/m.parquet"}, "train": {"epochs": 5}}
    assert protocol.run_fingerprint(moved, 1, "val", "f" * 64) == a  # where the data lives, and more epochs: same
    b = protocol.run_fingerprint({**cfg, "model": {"split_ratio": 0.25}}, 2, "test", "f" * 64)
    diff = protocol.fingerprint_diff(a, b)
    assert [d.split(":")[0] for d in diff] == ["config_sha256", "fold", "selection"]
    assert "fold: saved 1, now 2" in diff and "selection: saved val, now test" in diff
    with pytest.raises(ValueError, match="run r was made under another protocol or input .*fold: saved 1, now 2"):
        protocol.check_fingerprint(a, b, "run r", "use --fresh")
    with pytest.raises(ValueError, match="no fingerprint saved"):
        protocol.check_fingerprint(None, b, "run r", "use --fresh")
    protocol.check_fingerprint(a, dict(a), "run r", "use --fresh")


def test_resuming_a_study_under_an_edited_space_is_refused(tmp_path):
    from orchestrator.outputs import Outputs
    from orchestrator.search.results import Paths, study_fingerprint
    from orchestrator.search.tuner import prepare_study

    space = load_space(ROOT / "search_spaces" / "smoke.yaml")
    paths = Paths(Outputs.resolve(str(tmp_path)), space.name, "sqlite:///unused")
    fp = study_fingerprint(space, [1], "a" * 64)
    assert prepare_study(space, "smoke-fold1", [1], paths, fp, resume=False, fresh=False) == "new"
    record = json.loads(paths.study_json("smoke-fold1").read_text())
    assert record["fingerprint"] == fp and not record["complete"] and record["protocol"] == "fold-wise-nested"
    edited = load_space(ROOT / "search_spaces" / "demo.yaml")  # another base and budget
    for other in (study_fingerprint(edited, [1], "a" * 64), study_fingerprint(space, [1], "b" * 64)):
        with pytest.raises(ValueError, match="study smoke-fold1 .* refusing to resume or reuse it"):
            prepare_study(space, "smoke-fold1", [1], paths, other, resume=True, fresh=False)
    assert prepare_study(space, "smoke-fold1", [1], paths, fp, resume=True, fresh=False) == "new"
    record["complete"] = True
    paths.study_json("smoke-fold1").write_text(json.dumps(record))
    assert prepare_study(space, "smoke-fold1", [1], paths, fp, resume=True, fresh=False) == "done"


def test_parity_metrics_are_named_after_the_split_they_come_from():
    from orchestrator.tracking.tune_callback import TrialTracking

    assert protocol.metric_name("val_uar", "test") == "test_uar"
    assert protocol.metric_name("ckpt_val_war", "test") == "ckpt_test_war"
    assert protocol.metric_name("val_uar", "val") == "val_uar" and protocol.metric_name("lr", "test") == "lr"
    result = {"epoch": 3, "val_uar": 0.4, "ckpt_val_uar": 0.5, "train_loss": 1.2, "trial_id": "x"}
    parity = TrialTracking("sqlite:///unused", None, "e", "s", {}, {}, {}, selection="test").epoch_metrics(result)
    assert parity == {"test_uar": 0.4, "ckpt_test_uar": 0.5, "train_loss": 1.2}
    nested = TrialTracking("sqlite:///unused", None, "e", "s", {}, {}, {}).epoch_metrics(result)
    assert nested == {"val_uar": 0.4, "ckpt_val_uar": 0.5, "train_loss": 1.2}


def test_sign_test():
    assert sign_test([0.1, 0.2, 0.05, 0.3, 0.1]) == {"wins": 5, "losses": 0, "ties": 0, "p": 0.0625}
    assert sign_test([0.1, -0.2]) == {"wins": 1, "losses": 1, "ties": 0, "p": 1.0}
    assert sign_test([0.0, 0.0])["p"] == 1.0 and sign_test([0.0, 0.0])["ties"] == 2
    assert sign_test([0.1, 0.1, -0.1, 0.1, 0.1, 0.1])["p"] == pytest.approx(2 * 7 / 64)


def test_champion_only_from_a_nested_search(tmp_path):
    """A registered model per space and protocol; no `champion` alias from a best-on-test search."""
    from orchestrator.tracking.client import Tracker
    from orchestrator.tracking.registry import model_name, set_champion

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    names = {model_name("dfew", "dfew_ifdd", "fold-wise-nested"), model_name("dfew", "dfew_ifdd", "paper-parity"),
             model_name("dfew", "dfew_ifdd", "cross-fold-nested"), model_name("dfew", "other", "fold-wise-nested")}
    assert len(names) == 4 and "ifdd-dfew-dfew_ifdd-parity" in names
    for name in ("ifdd-x-s-foldwise", "ifdd-x-s-parity"):
        tracker.client.create_registered_model(name)
        for _ in range(2):
            tracker.client.create_model_version(name, source=str(tmp_path), run_id=None)
    candidates = [{"version": "1", "selection_value": 0.3}, {"version": "2", "selection_value": 0.5}]
    assert set_champion(tracker, "ifdd-x-s-foldwise", candidates, "val") == "2"
    assert tracker.client.get_registered_model("ifdd-x-s-foldwise").aliases == {"champion": 2}
    assert set_champion(tracker, "ifdd-x-s-parity", candidates, "test") is None
    assert tracker.client.get_registered_model("ifdd-x-s-parity").aliases == {}


def test_each_rank_draws_its_own_loader_stream(small_manifest, write_run_yaml, tmp_path):
    from ifdd.pipeline import build_split_loaders, rank_seed
    from ifdd.runconfig import load_run_config

    cfg = load_run_config(write_run_yaml(tmp_path / "r.yaml", small_manifest))
    seeds = [build_split_loaders(cfg, 1, batch_size=4, eval_batch_size=4, rank=r).train.generator.initial_seed()
             for r in (0, 1, 0)]
    assert seeds[0] != seeds[1] and seeds[0] == seeds[2]
    assert len({rank_seed(s, r) for s in range(4) for r in range(4)}) == 16  # seed 0 rank 1 is not seed 1 rank 0


def test_quarantined_test_clips_are_counted_and_flagged(small_manifest, write_run_yaml, tmp_path):
    """A listed test clip quarantined by the index is never evaluated: the test figure says so (evaluated vs listed
    clips, the ids, a warning); on the real release the count is also held against the official one."""
    from ifdd.checkpoint import save_checkpoint
    from ifdd.data.manifest import split_coverage, write_manifest
    from ifdd.model import build_model
    from ifdd.pipeline import evaluate_checkpoint
    from ifdd.runconfig import load_run_config

    df = load_manifest(small_manifest)
    victim = fold_split(df, 1, "test")["clip_id"].iloc[0]
    df.loc[df["clip_id"].eq(victim), ["status", "reason"]] = ["quarantined", "undecodable: truncated"]
    manifest = write_manifest(df, tmp_path / "q.parquet")
    cfg = load_run_config(write_run_yaml(tmp_path / "r.yaml", manifest))
    save_checkpoint(tmp_path / "best.pt", {"model": build_model(cfg.model).state_dict()})
    out = evaluate_checkpoint(tmp_path / "best.pt", cfg, 1)
    assert out["listed_clips"] == out["clips"] + 1 and out["quarantined"] == [victim] and out["coverage_gap"]
    assert out["official_clips"] is None  # synthetic: no official count
    assert protocol.clip_count(out) == f"{out['clips']} of {out['clips'] + 1} listed clips"
    assert any(f"1 listed test clip(s) are quarantined and not in UAR/WAR ({victim})" in w
               for w in protocol.test_warnings(out, 1))

    real = load_manifest(small_manifest)
    real.attrs["ifdd"] = {**real.attrs["ifdd"], "synthetic": False}
    cov = split_coverage(real, 1, "test")
    assert cov["official"] == 2341 and cov["gap"] and cov["quarantined"] == []
    assert not split_coverage(load_manifest(small_manifest), 2, "test")["gap"]


def test_a_split_without_every_class_is_flagged():
    warnings = protocol.test_warnings({"uar_classes": 6, "clips": 40, "quarantined": []}, 3)
    assert warnings == ["fold 3 test split holds clips of 6 of 7 classes: its UAR is the mean recall over those 6"]
    assert protocol.test_warnings({"uar_classes": 7, "clips": 40}, 3) == []
