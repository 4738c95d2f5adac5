"""cluster end to end: gather-senses samples of real corpus sentences (MiniLM), the CLI as a user runs it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from safetensors.numpy import load_file

from distil_jobs.senses.kmeans import Params, cluster_token, distinct_rows, initial_centroids, kmeans, token_rng
from distil_jobs.senses.mcl import count_clusters, knn_graph, mcl, skd_k
from tests.integration.sense_helpers import SampledVectors, corpus_head, gather, write_other_artifact

CAP = 48  # vectors kept per token: frequent tokens get k-means, rare ones keep their samples


@pytest.fixture(scope="module")
def samples(data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import run_cli

    folder = tmp_path_factory.mktemp("senses")
    return gather(run_cli, corpus_head(data_path, folder / "corpus.tsv", 300), folder / "samples", CAP)


@pytest.fixture(scope="module")
def vectors(samples: Path) -> SampledVectors:
    return SampledVectors(samples)


@pytest.fixture(scope="module")
def reference(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One unsharded run with the defaults (k 10) and a plot: what the other tests compare with."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("dict") / "one"
    run_cli("cluster", "--samples", str(samples), "--output", str(out), "--plot-tokens", "film,the", check=True)
    return out


def dictionary(out: Path) -> dict[str, np.ndarray]:
    return load_file(str(out / "sense_dict.safetensors"))


def senses_of(d: dict[str, np.ndarray], token: int) -> np.ndarray:
    return d["centroids"][d["offsets"][token]:d["offsets"][token + 1]]


def test_same_run_twice_gives_the_same_bytes_and_a_full_manifest(cli, reference, samples, vectors, tmp_path):
    again = tmp_path / "again"
    cli("cluster", "--samples", str(samples), "--output", str(again), "--workers", "1", check=True)
    assert (again / "sense_dict.safetensors").read_bytes() == (reference / "sense_dict.safetensors").read_bytes()

    d = dictionary(reference)
    assert d["offsets"].shape == (vectors.vocab_size + 1,) and d["offsets"][0] == 0
    assert d["centroids"].shape == (d["offsets"][-1], vectors.dim) and d["centroids"].dtype == np.float32
    assert d["counts"].shape == (d["offsets"][-1],) and (d["counts"] > 0).all()
    sizes = np.diff(d["offsets"])
    assert set(np.flatnonzero(sizes)) == set(vectors.vectors)  # every token with samples, no other
    for token, kept in vectors.vectors.items():  # every sample lands in exactly one sense of its token
        assert d["counts"][d["offsets"][token]:d["offsets"][token + 1]].sum() == len(kept)
    assert sizes.max() == 10

    m = json.loads((reference / "manifest.json").read_text())
    extra = m["extra"]
    assert m["kind"] == "sense-dict" and m["rows"] == extra["total_senses"] == len(d["centroids"])
    assert (extra["teacher"], extra["layer"], extra["dim"], extra["vocab_size"]) == ("minilm", 6, 384, 30522)
    assert extra["tokenizer_fingerprint"] == vectors.fingerprint
    assert (extra["k"], extra["k_rule"], extra["niter"], extra["seed"]) == (10, "fixed", 20, 0)
    assert extra["tokens_covered"] == len(vectors.vectors) and 0 < extra["mean_inertia"] < 100
    samples_sha = __import__("hashlib").sha256((samples / "manifest.json").read_bytes()).hexdigest()
    assert m["inputs"][0]["manifest_sha256"] == samples_sha and m["inputs"][0]["kind"] == "sense-samples"
    assert {"sense_dict.safetensors", "senses.png"} <= {f["path"] for f in m["files"]}
    assert extra["plot_tokens"]["film"]["token"] == "film"
    assert (reference / "senses.png").read_bytes()[:4] == b"\x89PNG"
    assert cli("verify", str(reference)).returncode == 0


def test_centroids_match_sklearn_from_the_same_start(reference, vectors):
    from sklearn.cluster import KMeans

    params = Params(k=10, k_rule="fixed", niter=20, seed=0)
    d = dictionary(reference)
    frequent = sorted(vectors.vectors, key=lambda t: -len(vectors.vectors[t]))[:4]
    for token in frequent:
        x = np.stack(vectors.vectors[token]).astype(np.float32)
        distinct, _ = distinct_rows(np.stack(vectors.vectors[token]))
        init = initial_centroids(distinct.astype(np.float32), 10, token_rng(0, token))
        ours, _, _ = kmeans(x, init, params.niter, params.seed)
        theirs = KMeans(10, init=init, n_init=1, max_iter=20, tol=0.0, algorithm="lloyd").fit(x).cluster_centers_
        np.testing.assert_allclose(ours, theirs, atol=2e-3)
        senses = cluster_token(token, np.stack(vectors.vectors[token]), params)
        np.testing.assert_array_equal(senses_of(d, token), senses.centroids)  # the job ran exactly this


def test_two_shards_merge_into_the_unsharded_dictionary_and_resume_from_parts(cli, reference, samples, tmp_path):
    out = tmp_path / "two"
    args = ["cluster", "--samples", str(samples), "--output", str(out), "--plot-tokens", "film,the",
            "--num-shards", "2"]
    cli(*args, "--shard-index", "0", check=True)
    parts = sorted((out / "parts").glob("*.safetensors"))
    assert parts and not (out / "manifest.json").exists()
    # A shard killed after its first part: no done marker, a part missing. The rerun redoes only that part.
    (out / "_shards" / "shard-00000-of-00002.done").unlink()
    parts[-1].unlink()
    kept = {p: p.stat().st_mtime_ns for p in parts[:-1]}
    cli(*args, "--shard-index", "0", check=True)
    assert parts[-1].exists() and all(p.stat().st_mtime_ns == t for p, t in kept.items())
    cli(*args, "--shard-index", "1", check=True)
    assert (out / "sense_dict.safetensors").read_bytes() == (reference / "sense_dict.safetensors").read_bytes()
    m = json.loads((out / "manifest.json").read_text())
    assert m["extra"]["shards"] == 2 and m["fingerprint"] == json.loads((reference / "manifest.json").read_text())[
        "fingerprint"]


def test_tokens_with_fewer_samples_than_k_keep_them(reference, vectors):
    d = dictionary(reference)
    rare = [t for t, v in vectors.vectors.items() if len(v) < 10]
    assert len(rare) > 100
    for token in rare:
        mine = np.stack(vectors.vectors[token]).astype(np.float32)
        got = senses_of(d, token)
        assert {r.tobytes() for r in got} == {r.tobytes() for r in mine}  # the samples themselves, deduplicated
        assert len(got) == len({r.tobytes() for r in mine})
        assert d["counts"][d["offsets"][token]:d["offsets"][token + 1]].sum() == len(mine)


def test_mcl_finds_obvious_clusters():
    # Three 5-cliques joined by one weak edge each: MCL must return exactly the cliques.
    blocks = sp.block_diag([np.ones((5, 5))] * 3, format="lil")
    blocks[4, 5] = blocks[5, 4] = blocks[9, 10] = blocks[10, 9] = 0.1
    labels = mcl(blocks.tocsr())
    assert [len(set(labels[i:i + 5])) for i in (0, 5, 10)] == [1, 1, 1] and len(set(labels)) == 3
    # Three far-apart blobs of real-looking vectors: the k-nearest-neighbour graph keeps them apart.
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 32)) * 10
    x = np.concatenate([c + rng.standard_normal((40, 32)) * 0.5 for c in centres])
    graph = knn_graph(x)
    assert graph.nnz <= 120 * 21 and (graph != graph.T).nnz == 0
    assert count_clusters(x, rng) >= 3
    assert [skd_k(m) for m in (1, 49, 60, 900, 901)] == [5, 5, 6, 90, 360]


def test_skd_rule_k_stays_within_its_bounds(cli, samples, vectors, tmp_path):
    out = tmp_path / "skd"
    cli("cluster", "--samples", str(samples), "--output", str(out), "--k-rule", "skd", check=True)
    d, extra = dictionary(out), json.loads((out / "manifest.json").read_text())["extra"]
    assert extra["k_rule"] == "skd" and extra["mcl"]["neighbours"] == 10
    assert extra["k_chosen"]["min"] >= 5
    for token, kept in vectors.vectors.items():  # m <= samples, so k <= max(5, 0.1 * samples)
        assert len(senses_of(d, token)) <= max(5, round(0.1 * min(len(kept), 500)))


@pytest.mark.parametrize("case", ["k0", "cap", "kind", "plot"])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(cli, samples, vectors, tmp_path, case):
    out = tmp_path / "out"
    source = str(samples)
    extra: list[str] = []
    if case == "k0":
        extra, expected = ["--k", "0"], "--k"
    elif case == "cap":
        extra, expected = ["--k", str(CAP + 1)], f"at most {CAP} samples per token"
    elif case == "kind":
        source, expected = str(write_other_artifact(tmp_path / "emb")), "'teacher-embeddings' artifact, not 'sense-samples'"
    else:
        absent = next(w for w, i in sorted(vectors.tokenizer.vocab.items(), key=lambda kv: kv[1])
                      if i > 2000 and w.isalpha() and i not in vectors.vectors)  # a whole word the corpus lacks
        extra, expected = ["--plot-tokens", absent], "has no samples"
    done = cli("cluster", "--samples", source, "--output", str(out), *extra)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], done.stderr
    assert not any("Traceback" in line for line in lines)
    assert not out.exists() or not os.listdir(out)


def test_batched_range_equals_one_token_at_a_time(vectors):
    """The job's batched path (shared seeding batches, hashed duplicate search, plain tokens scattered)
    gives each token the bytes `cluster_token` gives it alone, duplicates included."""
    from distil_jobs.senses.range_kmeans import cluster_range, duplicate_suspects, thread_pool

    params = Params(k=10, k_rule="fixed", niter=20, seed=0)
    tokens = sorted(vectors.vectors)[:300]
    rows = [np.stack(vectors.vectors[t]) for t in tokens]
    rows[0] = np.concatenate([rows[0], rows[0][:1]])  # a repeated sample: must go through distinct_rows
    starts = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    values = np.concatenate(rows)
    assert duplicate_suspects(values, starts)[0] and sum(len(r) > 10 for r in rows) > 10  # k-means ran too
    with thread_pool(2) as pmap:
        part = cluster_range(np.asarray(tokens, np.int64), starts, values, params, pmap)
    offsets = np.concatenate([[0], np.cumsum(part["sizes"])])
    for i, (token, x) in enumerate(zip(tokens, rows, strict=True)):
        alone = cluster_token(token, x, params)
        np.testing.assert_array_equal(part["centroids"][offsets[i]:offsets[i + 1]], alone.centroids)
        np.testing.assert_array_equal(part["counts"][offsets[i]:offsets[i + 1]], alone.counts)
        assert part["inertia"][i] == alone.inertia and part["samples"][i] == len(x)
