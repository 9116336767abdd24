"""Learner → rollout-engine weight sync: the bucket format (`buckets`), both ends of a sync
(`receiver`), the transports (`transport`, `broadcast`, `ipc`) and the choice of one (`choice`)."""
