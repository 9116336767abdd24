"""Serving a policy on live speech: a streaming translator on one persistent KV cache, and the
simulstream speech processor built on it (the field's runner, server and OmniSTEval loop)."""
