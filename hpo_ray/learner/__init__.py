"""The learner's pure-torch core: HPO policy loss, advantages, DeepSpeed config, weight sync, checkpoints.

Nothing here imports Ray; the learner-group actors in `actors/` are thin wrappers over these modules.
Import the submodules directly (`from hpo_ray.learner.loss import policy_loss`) so that importing the
package stays cheap (DeepSpeed is only imported by `distributed` and by callers of `ds_config`).
"""
