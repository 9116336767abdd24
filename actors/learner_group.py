"""The learner group: one Ray actor per rank, torch.distributed inside (gloo on CPU, NCCL on GPU).

`LearnerGroup` is the driver-side handle: it starts the ranks in the learner pool's bundles,
splits a step's sequences over ranks and optimiser steps, and gathers weights for the engines.
"""

import ray

from actors.placement import in_bundle
from hpo_ray.config import RunConfig, parse_config
from hpo_ray.env import apply_defaults
from hpo_ray.learner.batch import SequenceItem
from hpo_ray.learner.update_plan import plan_update


@ray.remote
class LearnerRank:
    """One rank: a `PolicyTrainer` (DeepSpeed engine + reference model)."""

    def __init__(self, cfg: dict, model_path: str, rank: int, world: int, addr: str, port: int):
        apply_defaults()
        from hpo_ray.learner.distributed import pin_socket_interface
        from hpo_ray.learner.trainer import PolicyTrainer

        pin_socket_interface(ray.util.get_node_ip_address())
        # Ray sets CUDA_VISIBLE_DEVICES to this actor's own GPU, so its local device index is always 0.
        self.trainer = PolicyTrainer(parse_config(cfg), model_path, rank, world, addr, port, local_rank=0)

    def node_address(self) -> str:
        return ray.util.get_node_ip_address()

    def train_step(self, items: list[SequenceItem], opt_step_of: list[int], normalisers: list[float], passes: int) -> dict:
        return self.trainer.train_step(items, opt_step_of, normalisers, passes)

    def logprobs(self, items: list[SequenceItem]) -> list:
        return self.trainer.logprobs(items)

    def full_state_dict(self):
        return self.trainer.full_state_dict()

    def save_checkpoint(self, folder: str, client_state: dict) -> None:
        self.trainer.save_checkpoint(folder, client_state)

    def load_checkpoint(self, folder: str) -> dict:
        return self.trainer.load_checkpoint(folder)

    def optimizer_fingerprint(self) -> list[float]:
        return self.trainer.optimizer_fingerprint()

    def join_sync_group(self, host: str, port: int, world: int, backend: str) -> None:
        """Rank 0 joins the weight-sync broadcast group as its sender (rank 0 of that group)."""
        if self.trainer.rank == 0:
            from hpo_ray.sync.broadcast import BroadcastBackend, make_sync_group

            device = "cuda" if backend == "nccl" else "cpu"
            self.sync = BroadcastBackend(make_sync_group(host, port, 0, world, backend, 600.0), 0, 0, device)

    def broadcast_weights(self, version: int, bucket_mb: float) -> dict:
        """All ranks gather (collective under ZeRO-3); rank 0 broadcasts the buckets."""
        state = self.trainer.full_state_dict()
        if self.trainer.rank != 0:
            return {}
        from hpo_ray.sync.receiver import send_state

        stats = send_state(state, self.sync, bucket_mb, version)
        return {"bytes": stats.bytes, "buckets": stats.buckets, "seconds": stats.seconds}

    def stream_weights(self, version: int, bucket_mb: float, checksum: bool):
        """All ranks gather; rank 0 yields the weights as unpacked buckets (Ray puts each one in the
        object store as it is yielded, so engines can apply bucket k while k+1 is being put)."""
        state = self.trainer.full_state_dict(copy=False)
        if self.trainer.rank != 0:
            return
        from hpo_ray.sync.buckets import pack_buckets

        yield from pack_buckets(state, bucket_mb, version, checksum, parts=True)

    def share_weights_ipc(self, version: int, bucket_mb: float) -> list:
        """All ranks gather; rank 0 packs the buckets on its GPU and returns their CUDA IPC handles
        (manifest JSON, handle) — the buckets stay allocated until `release_ipc`."""
        state = self.trainer.full_state_dict()
        if self.trainer.rank != 0:
            return []
        import torch

        from hpo_ray.sync.ipc import CudaIpcBackend
        from hpo_ray.sync.receiver import send_state
        from hpo_ray.sync.transport import ListChannel

        self.release_ipc()
        self.ipc = CudaIpcBackend(ListChannel())
        send_state(state, self.ipc, bucket_mb, version, device=torch.device("cuda", self.ipc.device))
        return list(self.ipc.channel.items)

    def release_ipc(self) -> None:
        """Free the shared buckets of the last IPC sync (after every engine has applied them)."""
        ipc = getattr(self, "ipc", None)
        if ipc is not None:
            ipc.finish()
            self.ipc = None


@ray.remote
def _address_and_port() -> tuple[str, int]:
    from hpo_ray.learner.distributed import free_port

    ip = ray.util.get_node_ip_address()  # the rendezvous binds this address only (loopback on one machine)
    return ip, free_port(ip)


class LearnerGroup:
    """Driver-side handle on the ranks."""

    def __init__(self, cfg: RunConfig, model_path: str, pool):
        self.cfg, self.pool = cfg, pool
        world = cfg.learner.num_ranks
        c = cfg.cluster
        # rank 0's node hosts the rendezvous: find an address and a free port there first
        addr, port = ray.get(_address_and_port.options(num_cpus=0, scheduling_strategy=in_bundle(pool, 0)).remote())
        self.ranks = [
            LearnerRank.options(
                num_cpus=c.cpus_per_learner,
                num_gpus=c.gpus_per_learner,
                name=f"hpo-learner-{r}",
                scheduling_strategy=in_bundle(pool, r),
                max_restarts=0,
            ).remote(cfg.model_dump(mode="json"), model_path, r, world, addr, port)
            for r in range(world)
        ]
        ray.get([rank.node_address.remote() for rank in self.ranks])

    def train(self, items: list[SequenceItem]) -> dict:
        """One RL step's update: `updates_per_step` passes over the items in optimiser steps of
        `learner.global_batch_size` sequences, each step's sequences spread over the ranks."""
        plan = plan_update(items, self.cfg)
        shards = [[] for _ in self.ranks]
        steps = [[] for _ in self.ranks]
        for i, (rank, k) in enumerate(plan.assignment):
            shards[rank].append(items[i])
            steps[rank].append(k)
        results = ray.get(
            [
                r.train_step.remote(shards[j], steps[j], plan.normalisers, self.cfg.algorithm.updates_per_step)
                for j, r in enumerate(self.ranks)
            ]
        )
        from hpo_ray.learner.loss import merge_metrics

        parts = [m for m in results if m.get("tokens")]
        merged = merge_metrics(parts) if parts else {}
        if results and "grad_norm" in results[0]:
            merged["grad_norm"] = results[0]["grad_norm"]
        skipped = results[0]["learner/skipped_updates"]  # the same on every rank: the skip is agreed
        merged["learner/skipped_updates"] = skipped
        merged["optimizer_steps"] = len(plan.normalisers) * self.cfg.algorithm.updates_per_step - skipped
        merged["time/logprob"] = max(m.get("time/logprob", 0.0) for m in results)
        return merged

    def state_dict(self) -> dict:
        """Full HF-named weights from rank 0 (all ranks take part under ZeRO-3)."""
        return ray.get([r.full_state_dict.remote() for r in self.ranks])[0]

    def save(self, folder: str, client_state: dict) -> None:
        ray.get([r.save_checkpoint.remote(folder, client_state) for r in self.ranks])

    def load(self, folder: str) -> dict:
        return ray.get([r.load_checkpoint.remote(folder) for r in self.ranks])[0]

    def join_sync_group(self, host: str, port: int, world: int, backend: str) -> list:
        return [r.join_sync_group.remote(host, port, world, backend) for r in self.ranks]

    def broadcast_weights(self, version: int, bucket_mb: float) -> list:
        return [r.broadcast_weights.remote(version, bucket_mb) for r in self.ranks]

    def stream_weights(self, version: int, bucket_mb: float, checksum: bool):
        """Object refs of rank 0's weight buckets, as they are put; the other ranks only join the gather."""
        streams = [r.stream_weights.options(num_returns="streaming").remote(version, bucket_mb, checksum) for r in self.ranks]
        yield from streams[0]
        for stream in streams[1:]:
            for ref in stream:  # none: a rank > 0 yields nothing; this waits for it and surfaces its error
                ray.get(ref)

    def share_weights_ipc(self, version: int, bucket_mb: float) -> list:
        return [r.share_weights_ipc.remote(version, bucket_mb) for r in self.ranks]

    def release_ipc(self) -> list:
        return [r.release_ipc.remote() for r in self.ranks]

    def sync_address(self) -> tuple[str, int]:
        """Where the weight-sync group's store listens: a free port on rank 0's node."""
        return ray.get(_address_and_port.options(num_cpus=0, scheduling_strategy=in_bundle(self.pool, 0)).remote())

    def optimizer_fingerprints(self) -> list[list[float]]:
        return ray.get([r.optimizer_fingerprint.remote() for r in self.ranks])

    def shutdown(self) -> None:
        for r in self.ranks:
            ray.kill(r)
