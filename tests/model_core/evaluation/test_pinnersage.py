"""PinnerSage clusters and its oracle / round-robin retrieval against hand-worked examples and a
brute force that scores every item in Python loops."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from model_core.data.synthetic import WorldConfig
from model_core.data.timelines import PinCatalog, Timelines
from model_core.evaluation.index import index_positions
from model_core.evaluation.leave_one_out import full_ranks
from model_core.evaluation.metrics import (
    evaluate_retrieval,
    hit_rate_and_ndcg_at_k,
    interest_entropy,
)
from model_core.evaluation.metrics import p90_coverage as p90
from model_core.evaluation.paper_protocol import EvalConfig, build_eval_set
from model_core.evaluation.pinnersage import (
    PinnerSageConfig,
    round_robin,
    user_clusters,
    ward_labels,
)
from model_core.evaluation.pinnersage_scoring import pinnersage_loo, pinnersage_metrics
from model_core.evaluation.seen import Seen
from model_core.training.recipe import split_timestamp

DAY = 86_400


def make_timelines(users: list[list[tuple[int, int, bool]]]) -> Timelines:
    """One list of (ts, catalogue row, positive) per user, in time order."""
    rows = [a for u in users for a in u]
    n = len(rows)
    pin_row = np.array([r for _, r, _ in rows], dtype=np.int64)
    return Timelines(
        user_ids=np.arange(len(users), dtype=np.int64) + 100,
        offsets=np.concatenate([[0], np.cumsum([len(u) for u in users])]).astype(np.int64),
        ts=np.array([t for t, _, _ in rows], dtype=np.int64),
        pin_row=pin_row,
        pin_id=pin_row + 1000,
        action=np.ones(n, dtype=np.int64),
        surface=np.ones(n, dtype=np.int64),
        duration=np.ones(n, dtype=np.float32),
        positive=np.array([p for _, _, p in rows], dtype=bool),
    )


def make_catalog(embeddings: np.ndarray, topics: np.ndarray | None = None) -> PinCatalog:
    n = len(embeddings)
    return PinCatalog(
        pin_ids=np.arange(n, dtype=np.int64) + 1000,
        embeddings=np.asarray(embeddings, dtype=np.float32),
        topics=np.zeros(n, dtype=np.int64) if topics is None else np.asarray(topics),
    )


def angles(degrees: Sequence[float]) -> np.ndarray:
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    xy = np.stack([np.cos(rad), np.sin(rad)], axis=1)
    return np.where(np.abs(xy) < 1e-12, 0.0, xy)  # cos 90° is exactly 0, not 6e-17


# --- clustering ---------------------------------------------------------------------------------


def test_ward_matches_scipy_fcluster() -> None:
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    rng = np.random.default_rng(0)
    for _ in range(30):
        m, d = int(rng.integers(2, 25)), int(rng.integers(2, 6))
        x = rng.standard_normal((4, m, d))
        x /= np.linalg.norm(x, axis=-1, keepdims=True)
        n = rng.integers(1, m + 1, size=4)
        t = float(rng.uniform(0.3, 3.0))
        labels = ward_labels(x, n, t)
        for b in range(4):
            assert (labels[b, n[b] :] == -1).all()
            if n[b] < 2:
                continue
            want = hierarchy.fcluster(hierarchy.linkage(x[b, : n[b]], "ward"), t, "distance")
            got = labels[b, : n[b]]
            assert np.array_equal(got[:, None] == got[None, :], want[:, None] == want[None, :])


def test_two_separated_groups_give_two_clusters_with_member_medoids() -> None:
    # Rows 0-2 near the x axis, rows 3-5 near the y axis, row 6 unused.
    emb = angles([-10, 0, 10, 85, 90, 100, 45]) * 3.0  # not unit norm: clustering normalises
    catalog = make_catalog(emb)
    tl = make_timelines([[(i * 10, r, True) for i, r in enumerate([0, 3, 1, 4, 2, 5])]])
    vectors, valid = user_clusters(tl, catalog, PinnerSageConfig(clusters=3))
    assert vectors.shape == (1, 3, 2)
    assert valid.tolist() == [[True, True, False]]
    np.testing.assert_allclose(np.linalg.norm(vectors[0, :2], axis=1), 1.0, rtol=1e-6)
    assert (vectors[0, 2] == 0).all()
    # Medoids are members: the middle of each group (0° for {-10, 0, 10}; 90° for {85, 90, 100},
    # whose summed squared distances are smallest at 90°). Both groups have 3 actions and the
    # latest action (row 5, 100°) is in the y group, so it is the more important one.
    np.testing.assert_allclose(vectors[0, 0], angles([90])[0], atol=1e-6)
    np.testing.assert_allclose(vectors[0, 1], angles([0])[0], atol=1e-6)


def test_importance_prefers_recent_then_frequent_clusters() -> None:
    catalog = make_catalog(angles([0, 90]))
    now = 100 * DAY
    # Group x: 3 actions 14 days before the last action (weight 1/2 each, 1.5 in all);
    # group y: 2 actions at the last action time (weight 1 each, 2.0 in all).
    acts = [(now - 14 * DAY, 0, True)] * 3 + [(now, 1, True)] * 2
    tl = make_timelines([acts])
    vec, valid = user_clusters(tl, catalog, PinnerSageConfig(clusters=2, half_life_days=14.0))
    assert valid.all()
    np.testing.assert_allclose(vec[0], angles([90, 0]), atol=1e-7)  # recent first
    # A (practically) infinite half-life counts actions: the 3-action group wins.
    vec, _ = user_clusters(tl, catalog, PinnerSageConfig(clusters=2, half_life_days=1e12))
    np.testing.assert_allclose(vec[0], angles([0, 90]), atol=1e-7)
    # Keep only the top cluster.
    vec, valid = user_clusters(tl, catalog, PinnerSageConfig(clusters=1))
    assert vec.shape == (1, 1, 2)
    assert valid.all()
    np.testing.assert_allclose(vec[0, 0], angles([90])[0], atol=1e-7)


def test_actions_are_the_last_positives_or_every_action_without_positives() -> None:
    catalog = make_catalog(angles([0, 90]))
    # User 0: old positives at 90°, the last two positives at 0°, a later non-positive at 90°.
    # User 1: no positive at all: its actions are used.
    tl = make_timelines(
        [
            [(1, 1, True), (2, 1, True), (3, 0, True), (4, 0, True), (5, 1, False)],
            [(1, 1, False), (2, 1, False)],
        ]
    )
    vec, valid = user_clusters(tl, catalog, PinnerSageConfig(max_actions=2, clusters=3))
    assert valid.tolist() == [[True, False, False], [True, False, False]]
    np.testing.assert_allclose(vec[:, 0], angles([0, 90]), atol=1e-7)
    _, valid = user_clusters(tl, catalog, PinnerSageConfig(max_actions=4, clusters=3))
    assert valid[0].tolist() == [True, True, False]


# --- round robin ----------------------------------------------------------------------------------


def test_round_robin_interleaves_in_importance_order_skipping_duplicates() -> None:
    lists = np.array(
        [
            [[1, 2, 3, 4, 7], [2, 5, 1, 6, 8]],
            [[1, 2, 3, 4, 7], [9, 9, 9, 9, 9]],  # one valid cluster: the second list is ignored
        ]
    )
    blended, emit = round_robin(lists, np.array([2, 1]), length=5)
    # Cluster 0: 1; cluster 1: 2; cluster 0: 3 (2 is taken); cluster 1: 5; cluster 0: 4.
    assert blended.tolist() == [[1, 2, 3, 5, 4], [1, 2, 3, 4, 7]]
    assert emit[0].tolist() == [[0, 1, 2, 4, 5], [1, 3, 0, 5, 5]]  # 5 = not blended
    assert emit[1, 0].tolist() == [0, 1, 2, 3, 4]
    assert round_robin(lists, np.array([2, 1]), length=3)[0].tolist() == [[1, 2, 3], [1, 2, 3]]


def two_interest_world() -> tuple[PinCatalog, Timelines, np.ndarray]:
    """Unit vectors on a quarter circle. The user's recent actions are the 0° pin (3 times), older
    ones the 90° pin (2 times): medoids are exactly a = (1, 0) (more important) and b = (0, 1), so
    every score is an exact float32 coordinate. Returns (catalog, history, index_rows)."""
    deg = [0, 10, 20, 30, 60, 70, 80, 90, 5, 15, 85, 45]
    topics = [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, -1]
    catalog = make_catalog(angles(deg), np.array(topics))
    tl = make_timelines([[(0, 7, True), (DAY, 7, True)] + [(30 * DAY, 0, True)] * 3])
    return catalog, tl, np.arange(8)  # index: rows 0-7 (0°..90°); 5°, 15°, 85°, 45° are not


def test_hand_worked_two_cluster_recall_and_blend() -> None:
    catalog, tl, index_rows = two_interest_world()
    vec, valid = user_clusters(tl, catalog, PinnerSageConfig(clusters=3))
    assert valid.tolist() == [[True, True, False]]
    assert vec[0, :2].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    # Ranked by a: 0°, 10°, 20°, 30°, 60°, ...; by b: 90°, 80°, 70°, 60°, ...
    # Blend: 0° (t0), 90° (t1), 10° (t2), 80° (t3), 20° (t4), 70° (t5), 30° (t6), 60° (t7).
    # k = 3. Positives (index rows in brackets):
    #   5°  (8): a ranks 1 item >= it (0°)        oracle hit; placed by a at its first turn >= 1,
    #            t2: 2 items ahead (0°, 90°)      round-robin hit
    #   15° (9): a ranks 2 items >= it (0°, 10°)  oracle hit; a's first turn >= 3 is t4: miss
    #   85° (10): b ranks 1 item >= it (90°)      oracle hit; b's first turn >= 2 is t3: miss
    #   45° (11): 4 items >= it under a and b     miss, miss
    #   10° (1, IN the index): a ranks 1 OTHER item >= it (0°; never itself, the metrics.py
    #            rule): oracle hit; a's first turn >= 1 is t2: 2 items ahead, round-robin hit
    positives = np.array([8, 9, 10, 11, 1])
    out = pinnersage_metrics(
        tl, catalog, np.zeros(5, np.int64), positives, index_rows, k=3, coverage_k=2, entropy_k=8
    )
    oracle, rr = out["pinnersage_oracle"], out["pinnersage_round_robin"]
    assert oracle.recall_at_k == pytest.approx(4 / 5)
    assert rr.recall_at_k == pytest.approx(2 / 5)
    # Coverage and entropy come from the blend for both: top-2 = {0°, 90°} -> 2 of 8 pins;
    # top-8 = four topic-0 and four topic-1 pins -> ln 2.
    for m in (oracle, rr):
        assert m.p90_coverage_at_k == pytest.approx(2 / 8)
        assert m.interest_entropy_at_k == pytest.approx(math.log(2))
        assert (m.n_users, m.n_positives, m.index_size, m.k) == (1, 5, 8, 3)
    # k = 4: 85° (3 items ahead) becomes a round-robin hit; 15° (4 ahead) does not.
    out4 = pinnersage_metrics(tl, catalog, np.zeros(5, np.int64), positives, index_rows, k=4)
    assert out4["pinnersage_round_robin"].recall_at_k == pytest.approx(3 / 5)
    assert out4["pinnersage_oracle"].recall_at_k == pytest.approx(4 / 5)


def test_hand_worked_leave_one_out() -> None:
    catalog, tl, _ = two_interest_world()
    # Target 20° (row 2), ranked over the whole 12-pin catalogue, others only.
    # a: 0°, 5°, 10°, 15° score >= cos 20° -> rank 4; b: 8 others -> rank 8. Oracle rank 4.
    # Blend of the others: 0° (t0), 90° (t1), 5° (t2), 85° (t3), 10° (t4), 80° (t5), 15° (t6),
    # 70° (t7); a places 20° at its first turn >= 7: t8.
    got = pinnersage_loo(tl, catalog, np.array([2]), k=10)
    assert got["pinnersage_oracle"] == pytest.approx((1.0, 1 / math.log2(6)))
    assert got["pinnersage_round_robin"] == pytest.approx((1.0, 1 / math.log2(10)))
    got = pinnersage_loo(tl, catalog, np.array([2]), k=5)
    assert got["pinnersage_oracle"] == pytest.approx((1.0, 1 / math.log2(6)))
    assert got["pinnersage_round_robin"] == (0.0, 0.0)


# --- random examples: invariants, single cluster, brute force ---------------------------------


def random_world(seed: int, n_users: int = 12) -> tuple[PinCatalog, Timelines]:
    """60 pins around 4 topic centres in 5-d; each user engages 2-20 times with 1-3 topics."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4, 5)) * 2.0
    topic = rng.integers(0, 4, size=60)
    emb = centres[topic] + rng.standard_normal((60, 5)) * 0.6
    users = []
    for _ in range(n_users):
        mine = rng.choice(4, size=int(rng.integers(1, 4)), replace=False)
        pool = np.flatnonzero(np.isin(topic, mine))
        n = int(rng.integers(2, 21))
        ts = np.sort(rng.integers(0, 60 * DAY, size=n))
        rows = rng.choice(pool, size=n)
        pos = rng.random(n) < 0.7
        users.append([(int(t), int(r), bool(p)) for t, r, p in zip(ts, rows, pos, strict=True)])
    return make_catalog(emb, topic), make_timelines(users)


def brute_force_blend(rankings: list[list[int]], length: int) -> list[int]:
    out: list[int] = []
    pointers = [0] * len(rankings)
    turn = 0
    while len(out) < length and any(p < len(r) for p, r in zip(pointers, rankings, strict=True)):
        c = turn % len(rankings)
        turn += 1
        while pointers[c] < len(rankings[c]) and rankings[c][pointers[c]] in out:
            pointers[c] += 1
        if pointers[c] < len(rankings[c]):
            out.append(rankings[c][pointers[c]])
            pointers[c] += 1
    return out


def brute_force_metrics(
    catalog: PinCatalog,
    vectors: np.ndarray,
    valid: np.ndarray,
    positive_user: np.ndarray,
    positive_pin_row: np.ndarray,
    index_rows: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Per-user oracle and round-robin recall and every user's blend of the whole index."""
    content = catalog.embeddings / np.linalg.norm(catalog.embeddings, axis=1, keepdims=True)

    def score(v: np.ndarray, row: int) -> float:
        return sum(float(v[d]) * float(content[row, d]) for d in range(len(v)))

    users = sorted(set(positive_user.tolist()))
    oracle, rr, blends = [], [], []
    for u in users:
        medoids = [vectors[u, c] for c in range(vectors.shape[1]) if valid[u, c]]
        idx_scores = [[score(v, int(r)) for r in index_rows] for v in medoids]
        rankings = [
            sorted(range(len(index_rows)), key=s.__getitem__, reverse=True) for s in idx_scores
        ]
        blends.append(brute_force_blend(rankings, len(index_rows)))
        o_hits, r_hits = [], []
        for p in positive_pin_row[positive_user == u]:
            ahead = []  # per cluster: index positions scoring >= the positive
            for v, s in zip(medoids, idx_scores, strict=True):
                sp = score(v, int(p))
                ahead.append([i for i in range(len(index_rows)) if s[i] >= sp])
            o_hits.append(min(len(a) for a in ahead) < k)
            with_p = [  # the positive (id -1) right after everything scoring >= it
                [i for i in r if i in a] + [-1] + [i for i in r if i not in a]
                for r, a in zip(rankings, ahead, strict=True)
            ]
            r_hits.append(brute_force_blend(with_p, len(index_rows) + 1).index(-1) < k)
        oracle.append(np.mean(o_hits))
        rr.append(np.mean(r_hits))
    return np.array(oracle), np.array(rr), blends


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_matches_brute_force(seed: int) -> None:
    catalog, tl = random_world(seed)
    rng = np.random.default_rng([seed, 1])
    perm = rng.permutation(len(catalog))
    index_rows = np.sort(perm[:30])  # positives are outside the index (see the hand example)
    positive_user = np.sort(rng.integers(0, tl.n_users, size=40))
    positive_pin_row = rng.choice(perm[30:], size=40)
    cfg = PinnerSageConfig(clusters=3, distance_threshold=1.2, half_life_days=7.0)
    vectors, valid = user_clusters(tl, catalog, cfg)
    assert (valid.sum(axis=1) > 1).sum() >= 3  # the example exercises several clusters
    for k in (3, 10):
        out = pinnersage_metrics(
            tl, catalog, positive_user, positive_pin_row, index_rows, cfg, k, 4, 12
        )
        want_o, want_rr, blends = brute_force_metrics(
            catalog, vectors, valid, positive_user, positive_pin_row, index_rows, k
        )
        np.testing.assert_allclose(out["pinnersage_oracle"].per_user_recall, want_o)
        np.testing.assert_allclose(out["pinnersage_round_robin"].per_user_recall, want_rr)
        assert out["pinnersage_oracle"].recall_at_k == pytest.approx(want_o.mean())
        top4 = np.array([b[:4] for b in blends])
        top12 = np.array([b[:12] for b in blends])
        topics = catalog.topics[index_rows]
        for m in out.values():
            assert m.p90_coverage_at_k == pytest.approx(p90(top4, len(index_rows)))
            assert m.interest_entropy_at_k == pytest.approx(interest_entropy(top12, topics))


@pytest.mark.parametrize("seed", [0, 1])
def test_loo_matches_brute_force(seed: int) -> None:
    catalog, tl = random_world(seed, n_users=10)
    target = np.random.default_rng([seed, 2]).integers(0, len(catalog), size=tl.n_users)
    cfg = PinnerSageConfig(distance_threshold=1.2)
    vectors, valid = user_clusters(tl, catalog, cfg)
    content = catalog.embeddings / np.linalg.norm(catalog.embeddings, axis=1, keepdims=True)
    o_ranks, rr_ranks = [], []
    for u in range(tl.n_users):
        others = [i for i in range(len(catalog)) if i != target[u]]
        rankings, ahead = [], []
        for c in np.flatnonzero(valid[u]):
            s = [
                sum(float(vectors[u, c, d]) * float(content[i, d]) for d in range(5))
                for i in range(len(catalog))
            ]
            rankings.append(sorted(others, key=s.__getitem__, reverse=True))
            ahead.append({i for i in others if s[i] >= s[target[u]]})
        o_ranks.append(min(len(a) for a in ahead))
        with_t = [
            [i for i in r if i in a] + [-1] + [i for i in r if i not in a]
            for r, a in zip(rankings, ahead, strict=True)
        ]
        rr_ranks.append(brute_force_blend(with_t, len(catalog)).index(-1))
    for k in (3, 10):
        got = pinnersage_loo(tl, catalog, target, cfg, k)
        assert got["pinnersage_oracle"] == pytest.approx(
            hit_rate_and_ndcg_at_k(np.array(o_ranks), k)
        )
        assert got["pinnersage_round_robin"] == pytest.approx(
            hit_rate_and_ndcg_at_k(np.array(rr_ranks), k)
        )


def test_single_cluster_equals_single_embedding_retrieval_with_the_medoid() -> None:
    catalog, tl = random_world(3, n_users=15)
    rng = np.random.default_rng(7)
    index_rows = np.sort(rng.choice(len(catalog), size=35, replace=False))
    positive_user = np.sort(rng.integers(0, tl.n_users, size=50))
    positive_pin_row = rng.integers(0, len(catalog), size=50)  # some are in the index
    cfg = PinnerSageConfig(clusters=1)
    vectors, valid = user_clusters(tl, catalog, cfg)
    assert valid.all()
    content = catalog.embeddings / np.linalg.norm(catalog.embeddings, axis=1, keepdims=True)
    want = evaluate_retrieval(
        vectors[:, 0],
        positive_user,
        content[positive_pin_row],
        content[index_rows],
        catalog.topics[index_rows],
        index_positions(index_rows, positive_pin_row),
        k=5,
    )
    out = pinnersage_metrics(tl, catalog, positive_user, positive_pin_row, index_rows, cfg, k=5)
    for m in out.values():
        np.testing.assert_array_equal(m.per_user_recall, want.per_user_recall)
        assert m.as_dict() == want.as_dict()
    target = rng.integers(0, len(catalog), size=tl.n_users)
    ranks = full_ranks(vectors[:, 0], content, target)
    got = pinnersage_loo(tl, catalog, target, cfg, k=5)
    assert got["pinnersage_oracle"] == hit_rate_and_ndcg_at_k(ranks, 5)
    assert got["pinnersage_round_robin"] == hit_rate_and_ndcg_at_k(ranks, 5)


def test_oracle_bounds_round_robin_on_the_tiny_world(
    tiny_world: WorldConfig, tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    split = split_timestamp(tiny_world.dates[-1], 14)
    es = build_eval_set(tiny_timelines, tiny_catalog, split, EvalConfig(index_size=1_000))
    out = pinnersage_metrics(
        es.history, tiny_catalog, es.positive_user, es.positive_pin_row, es.index_rows
    )
    oracle, rr = out["pinnersage_oracle"], out["pinnersage_round_robin"]
    assert oracle.n_users == es.history.n_users == len(oracle.per_user_recall)
    assert (oracle.per_user_recall >= rr.per_user_recall).all()
    assert (rr.per_user_recall >= 0).all()
    assert (oracle.per_user_recall <= 1).all()
    assert oracle.recall_at_k > rr.recall_at_k > 0
    vectors, valid = user_clusters(es.history, tiny_catalog)
    assert valid[:, 0].all()
    assert (valid[:, 1:] <= valid[:, :-1]).all()  # valid slots first
    np.testing.assert_allclose(np.linalg.norm(vectors[valid], axis=1), 1.0, rtol=1e-5)


def test_seen_pins_leave_every_cluster_ranking() -> None:
    """seen: pins the user engaged with leave the rankings. Removing 0° (the user's own recent
    pin, index row 0) lifts 15° to 1 item ahead under a (10°) and 45° to 3 under b."""
    catalog, tl, index_rows = two_interest_world()
    positives = np.array([8, 9, 10, 11, 1])
    seen = Seen(np.array([0, 1]), np.array([0]))  # user 0 saw index position 0 (0°)
    out = pinnersage_metrics(
        tl, catalog, np.zeros(5, np.int64), positives, index_rows, k=3, seen=seen
    )
    # a now ranks 10°, 20°, ...: 5° has 1 ahead... every positive but 45° is an oracle hit;
    # 45° has 10°, 20°, 30° ahead under a (3, not < 3): still a miss.
    assert out["pinnersage_oracle"].recall_at_k == pytest.approx(4 / 5)
    unseen = pinnersage_metrics(tl, catalog, np.zeros(5, np.int64), positives, index_rows, k=3)
    assert out["pinnersage_round_robin"].recall_at_k > unseen["pinnersage_round_robin"].recall_at_k
