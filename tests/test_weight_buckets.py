"""Bucketed weight sync: layout, checksums, corruption detection, backends (in-process, gloo broadcast, GPU)."""

import dataclasses
import multiprocessing as mp
import queue
import random

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from hpo_ray.learner.distributed import free_port
from hpo_ray.sync.buckets import (
    ALIGN,
    BucketBuffer,
    BucketCorruptError,
    BucketManifest,
    WeightBucket,
    apply_bucket,
    bytes_checksum,
    pack_buckets,
    plan_buckets,
    state_checksum,
    unpack_bucket,
)
from hpo_ray.sync.receiver import BucketReceiver, receive_into, send_state
from hpo_ray.sync.transport import InProcessBackend

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_model(seed: int, tie: bool = False) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        tie_word_embeddings=tie,
    )
    return Qwen3ForCausalLM(cfg).eval()


def mixed_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(7, 5, generator=g),
        "b.bf16": torch.randn(13, generator=g).to(torch.bfloat16),
        "c.scalar": torch.tensor(3.5, dtype=torch.float64),
        "d.index": torch.arange(9, dtype=torch.int64),
        "e.flag": torch.tensor([True, False, True]),
        "f.transposed": torch.randn(4, 6, generator=g).t(),  # not contiguous
        "g.big": torch.randn(300, generator=g),
    }


def zeros_like_state(state):
    return {k: torch.zeros_like(v).contiguous() for k, v in state.items()}


def test_pack_then_apply_restores_every_dtype_and_shape_bit_for_bit():
    state = mixed_state()
    target = zeros_like_state(state)
    buckets = list(pack_buckets(state, bucket_mb=256 / 2**20, version=7))
    assert len(buckets) > 1
    for b in buckets:
        apply_bucket(target, b, verify=True)
    for k, v in state.items():
        assert target[k].dtype == v.dtype and torch.equal(target[k], v), k
    assert state_checksum(target) == state_checksum(state)


def test_parts_buckets_share_the_layout_without_copying_and_restore_the_state():
    state = mixed_state()
    packed = list(pack_buckets(state, bucket_mb=256 / 2**20, version=4))
    parts = list(pack_buckets(state, bucket_mb=256 / 2**20, version=4, parts=True))
    assert [b.manifest.specs for b in parts] == [b.manifest.specs for b in packed]
    assert all(b.manifest.parts for b in parts) and not any(b.manifest.parts for b in packed)
    assert parts[0].data[0].data_ptr() == state["a.weight"].data_ptr()  # the state's own tensor, not a copy
    target = zeros_like_state(state)
    for b in parts:
        manifest = BucketManifest.from_json(b.manifest.to_json())
        assert manifest == b.manifest
        apply_bucket(target, WeightBucket(manifest, b.data), verify=True)
    assert state_checksum(target) == state_checksum(state)


def test_a_changed_value_or_a_wrong_shape_in_a_parts_bucket_is_detected():
    state = mixed_state()
    bucket = next(pack_buckets(state, bucket_mb=1.0, version=1, parts=True))
    flipped = list(t.clone() for t in bucket.data)
    flipped[-1].view(-1)[3] += 1e-3
    with pytest.raises(BucketCorruptError, match="corrupted"):
        apply_bucket(zeros_like_state(state), WeightBucket(bucket.manifest, tuple(flipped)))
    with pytest.raises(BucketCorruptError, match="tensor 'a.weight'"):
        apply_bucket(zeros_like_state(state), WeightBucket(bucket.manifest, (bucket.data[0].t(),) + bucket.data[1:]))
    with pytest.raises(BucketCorruptError, match="expected 7 tensors"):
        apply_bucket(zeros_like_state(state), WeightBucket(bucket.manifest, bucket.data[:-1]))


def test_bucket_receiver_checks_order_and_holds_a_version_for_whole_state_engines():
    state = mixed_state()
    buckets = list(pack_buckets(state, bucket_mb=256 / 2**20, version=6, parts=True))
    streaming, whole = BucketReceiver(), BucketReceiver(whole_state=True)
    loads = [streaming.add(b, 6) for b in buckets]
    assert all(len(batch) == 1 for batch in loads)
    held = [whole.add(b, 6) for b in buckets]
    assert all(batch == [] for batch in held[:-1]) and [n for n, _ in held[-1][0]] == list(state)
    with pytest.raises(BucketCorruptError, match="out-of-order"):
        BucketReceiver().add(buckets[1], 6)
    with pytest.raises(BucketCorruptError, match="sent as 7"):
        BucketReceiver().add(buckets[0], 7)


def test_packing_into_a_reused_buffer_gives_the_same_buckets():
    state = mixed_state()
    fresh = [(b.manifest, b.data.clone()) for b in pack_buckets(state, bucket_mb=256 / 2**20, version=2)]
    buffer = BucketBuffer()
    target = zeros_like_state(state)
    pointers = set()
    for _ in range(2):  # a second sync reuses the warm buffer
        for (manifest, data), b in zip(fresh, pack_buckets(state, bucket_mb=256 / 2**20, version=2, buffer=buffer), strict=True):
            assert b.manifest == manifest and torch.equal(b.data, data)
            apply_bucket(target, b, verify=True)  # consumed before the next bucket overwrites the buffer
            pointers.add(b.data.data_ptr())
    assert len(pointers) <= 2  # one buffer (regrown at most once), not one allocation per bucket
    assert state_checksum(target) == state_checksum(state)


def test_bucket_layout_respects_size_order_and_alignment():
    shapes = [("x", (10,), torch.float32), ("y", (3,), torch.bfloat16), ("big", (100,), torch.float32), ("z", (5,), torch.float32)]
    plans = plan_buckets(shapes, bucket_bytes=64)
    assert [[s.name for s in p] for p in plans] == [["x", "y"], ["big"], ["z"]]  # the oversized tensor travels alone
    for p in plans:
        assert all(s.offset % ALIGN == 0 for s in p)
        if len(p) > 1:
            assert p[-1].offset + p[-1].nbytes <= 64
    with pytest.raises(ValueError, match="appears twice"):
        plan_buckets([("x", (1,), torch.float32), ("x", (1,), torch.float32)], 64)


def test_manifest_carries_version_position_and_survives_json():
    buckets = list(pack_buckets(mixed_state(), bucket_mb=256 / 2**20, version=3))
    assert [(b.manifest.version, b.manifest.index, b.manifest.count) for b in buckets] == [
        (3, i, len(buckets)) for i in range(len(buckets))
    ]
    m = buckets[0].manifest
    assert BucketManifest.from_json(m.to_json()) == m
    with pytest.raises(BucketCorruptError, match="manifest"):
        BucketManifest.from_json('{"version": 1}')


@pytest.mark.parametrize("damage", ["flip_bit", "swap_words", "zero_block", "truncate"])
def test_corrupted_bucket_is_detected(damage):
    state = {"w": torch.randn(4096), "v": torch.randn(1000)}
    bucket = next(pack_buckets(state, bucket_mb=1.0, version=1))
    data = bucket.data.clone()
    if damage == "flip_bit":
        data[12345] ^= 0x10
    elif damage == "swap_words":
        words = data.view(torch.int64)
        words[[10, 2000]] = words[[2000, 10]].clone()
    elif damage == "zero_block":
        data[4096:8192] = 0
    else:
        data = data[:-16]
    target = zeros_like_state(state)
    with pytest.raises(BucketCorruptError, match="version 1"):
        apply_bucket(target, WeightBucket(bucket.manifest, data), verify=True)
    assert all(float(t.abs().sum()) == 0 for t in target.values())  # nothing half-applied


def test_checksum_equals_a_pure_python_reference_including_wraparound_and_tail():
    rnd = random.Random(0)
    raw = bytes(rnd.getrandbits(8) for _ in range(8 * 1500 + 5))  # 1500 words (2 full blocks + partial) + 5 tail bytes
    t = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    padded = raw + bytes(3)
    words = [int.from_bytes(padded[i : i + 8], "little", signed=True) for i in range(0, len(padded), 8)]
    block, m = 512, (1 << 64) - 1
    s1 = sum(words) & m
    s2 = sum(w * (2 * (i // block) + 1) for i, w in enumerate(words)) & m
    s3 = sum(w * (2 * (i % block) + 1) for i, w in enumerate(words)) & m
    assert bytes_checksum(t) == f"{len(raw):x}:{s1:016x}{s2:016x}{s3:016x}"


def test_state_checksum_changes_with_any_single_weight_and_ignores_key_order():
    model = tiny_model(0)
    state = model.state_dict()
    before = state_checksum(model)
    assert state_checksum(dict(reversed(list(state.items())))) == before
    with torch.no_grad():
        state["model.layers.1.mlp.down_proj.weight"][3, 4] += 1e-6
    assert state_checksum(model) != before


@pytest.mark.parametrize("tie", [False, True])
def test_in_process_sync_makes_engine_generate_like_the_learner(tie):
    learner, engine = tiny_model(1, tie), tiny_model(2, tie)
    prompt = torch.tensor([[3, 17, 5, 9]])
    assert state_checksum(engine) != state_checksum(learner)
    backend = InProcessBackend()
    sent = send_state(learner.state_dict(), backend, bucket_mb=0.01, version=4)
    got = receive_into(engine, backend, verify=True, expected_version=4)
    backend.finish()
    assert sent.buckets == got.buckets > 1 and sent.bytes == got.bytes and got.version == 4
    assert state_checksum(engine) == state_checksum(learner)
    with torch.no_grad():
        want = learner.generate(prompt, max_new_tokens=12, do_sample=False)
        have = engine.generate(prompt, max_new_tokens=12, do_sample=False)
    assert torch.equal(want, have)


def test_receive_rejects_wrong_version_missing_buckets_and_uncovered_tensors():
    learner = tiny_model(1)
    state = learner.state_dict()

    def deliver(buckets):
        backend = InProcessBackend()
        backend.send(buckets)
        return backend

    all_buckets = list(pack_buckets(state, bucket_mb=0.01, version=5))
    with pytest.raises(ValueError, match="version 5, expected 6"):
        receive_into(tiny_model(2), deliver(all_buckets), expected_version=6)
    reordered = [all_buckets[1], all_buckets[0]] + all_buckets[2:]
    with pytest.raises(BucketCorruptError, match="out-of-order"):
        receive_into(tiny_model(2), deliver(reordered))
    partial = {k: v for k, v in state.items() if "layers.1" not in k}
    with pytest.raises(KeyError, match="did not update"):
        receive_into(tiny_model(2), deliver(pack_buckets(partial, bucket_mb=0.01, version=5)))
    with pytest.raises(KeyError, match="not in the target"):
        receive_into(tiny_model(2), deliver(pack_buckets({"lm_head.bias": torch.zeros(64)}, bucket_mb=1, version=5)))
    unchecked = list(pack_buckets(state, bucket_mb=0.01, version=5, checksum=False))
    with pytest.raises(BucketCorruptError, match="no checksum"):
        receive_into(tiny_model(2), deliver(unchecked), verify=True)
    receive_into(tiny_model(2), deliver(unchecked), verify=False)


def _broadcast_worker(rank: int, port: int, out: "mp.Queue") -> None:
    from hpo_ray.sync.broadcast import BroadcastBackend, make_sync_group

    group = make_sync_group("127.0.0.1", port, rank, 2, "gloo", timeout_s=60)
    backend = BroadcastBackend(group, src=0, rank=rank, device="cpu")
    if rank == 0:
        model = tiny_model(1)
        for version in (1, 2):  # two syncs in a row over the same group
            with torch.no_grad():
                model.model.norm.weight.fill_(float(version))
            send_state(model.state_dict(), backend, bucket_mb=0.01, version=version)
            out.put(("sender", version, state_checksum(model)))
    else:
        model = tiny_model(2)
        for version in (1, 2):
            stats = receive_into(model, backend, verify=True, expected_version=version)
            out.put(("receiver", version, state_checksum(model), stats.buckets))


def test_broadcast_backend_over_a_gloo_group_syncs_two_versions():
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_broadcast_worker, args=(r, port, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    results = []
    try:
        for _ in range(4):
            results.append(out.get(timeout=90))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    sender = {v: c for who, v, c, *_ in results if who == "sender"}
    receiver = {v: (c, n) for who, v, c, n in (r for r in results if r[0] == "receiver")}
    assert sender.keys() == receiver.keys() == {1, 2}
    assert sender[1] != sender[2]
    for v in (1, 2):
        assert receiver[v][0] == sender[v] and receiver[v][1] > 1
    assert all(p.exitcode == 0 for p in procs)


def test_gpu_backends_refuse_clearly_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the GPU tests below cover these backends")
    from hpo_ray.sync.broadcast import make_sync_group
    from hpo_ray.sync.ipc import CudaIpcBackend

    with pytest.raises(RuntimeError, match="CUDA-IPC weight sync needs CUDA"):
        CudaIpcBackend(queue.Queue())
    with pytest.raises(RuntimeError, match="NCCL weight-sync group needs CUDA"):
        make_sync_group("127.0.0.1", free_port(), 0, 2, "nccl", timeout_s=5)


@gpu
@needs_cuda
def test_checksum_is_identical_on_cpu_and_gpu():
    t = torch.randn(1_000_003).to(torch.bfloat16)
    assert bytes_checksum(t) == bytes_checksum(t.cuda())


def _gpu_worker(rank: int, port: int, kind: str, out: "mp.Queue", channel: "mp.Queue", release: "mp.Queue") -> None:
    from hpo_ray.sync.broadcast import BroadcastBackend, make_sync_group
    from hpo_ray.sync.ipc import CudaIpcBackend

    model = tiny_model(1 if rank == 0 else 2).cuda()
    if kind == "nccl":
        backend = BroadcastBackend(make_sync_group("127.0.0.1", port, rank, 2, "nccl", 60), src=0, rank=rank, device="cuda")
    else:
        backend = CudaIpcBackend(channel, device=0)
    if rank == 0:
        send_state(model.state_dict(), backend, bucket_mb=0.01, version=1)
        out.put(("sender", state_checksum(model)))
        release.get(timeout=120)  # keep the shared buckets alive until the receiver has applied them
        backend.finish()
    else:
        receive_into(model, backend, verify=True, expected_version=1)
        out.put(("receiver", state_checksum(model)))


@gpu
@needs_cuda
@pytest.mark.parametrize("kind", ["nccl", "ipc"])
def test_gpu_backend_syncs_between_processes(kind):
    if kind == "nccl" and torch.cuda.device_count() < 2:
        pytest.skip("NCCL refuses two ranks on one GPU; needs 2 GPUs")
    ctx = mp.get_context("spawn")
    out, channel, release = ctx.Queue(), ctx.Queue(), ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_gpu_worker, args=(r, port, kind, out, channel, release)) for r in (0, 1)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=180) for _ in range(2))
    release.put("done")
    for p in procs:
        p.join(timeout=60)
    assert results["receiver"] == results["sender"]
    assert all(p.exitcode == 0 for p in procs)


@pytest.mark.parametrize("parts", [False, True])
def test_host_buckets_carry_an_xxh3_checksum_and_one_flipped_bit_is_caught(parts):
    buckets = list(pack_buckets(mixed_state(), bucket_mb=0.01, version=2, parts=parts))
    assert all(b.manifest.checksum.startswith("xxh3:") for b in buckets)
    unpack_bucket(buckets[0])  # intact: verifies
    raw = buckets[0].data[0] if parts else buckets[0].data
    raw.view(-1).view(torch.uint8)[5] ^= 0x01
    with pytest.raises(BucketCorruptError, match="is corrupted"):
        unpack_bucket(buckets[0])


def test_a_bucket_with_the_torch_native_checksum_is_verified_by_that_algorithm():
    """What a GPU sender writes (torch-native sums) is checked with the same sums wherever it lands."""
    packed = next(pack_buckets(mixed_state(), bucket_mb=1, version=3))
    native = WeightBucket(dataclasses.replace(packed.manifest, checksum=bytes_checksum(packed.data)), packed.data)
    unpack_bucket(native)
    native.data[3] ^= 0x10
    with pytest.raises(BucketCorruptError, match="is corrupted"):
        unpack_bucket(native)
