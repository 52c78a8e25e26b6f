"""External rollout servers kept on-policy: `sgpo serve` on loopback as the
rollout server of SGPOTrainer (rollout = "openai"). After each sync the
server's greedy completions equal the trainer's own `generate` from the same
weights (and without sync they do not); the server's token ids and log-probs
are used as sampled; a server killed mid-run stops training with a named
error and the last checkpoint loads; a bf16 server against the fp32 trainer
moves the importance-sampling metrics and the cap bounds the weights; a
server whose weights lag is refused. Plus the weights' formula per mode, and
the URL convention shared with the judge."""
from __future__ import annotations

import contextlib
import math
import os

import pytest
import torch

import sgpo_engine
from sgpo_engine import tasks
from sgpo_engine.generation.generate import encode_prompt
from sgpo_engine.judge import FunctionJudge
from sgpo_engine.http_client import openai_base, server_root
from sgpo_engine.serve import Server
from sgpo_engine.train import SGPOTrainer, TrainConfig
from sgpo_engine.train import checkpoint as ckpt
from sgpo_engine.train.rollout import RolloutSyncError, WeightSync, rollout_is_weights
from test_train import TINY, hash_first_error, max_diff, params
from train_helpers import free_port, save_tiny_policy


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_policy(str(tmp_path_factory.mktemp("rollout") / "model"))


def _serve(model_dir, **load):
    return Server(sgpo_engine.load(model_dir, **load), "127.0.0.1", 0, model_name="tiny").start()


def _trainer(tmp_path, model_dir, url, **kw) -> SGPOTrainer:
    cfg = TrainConfig(output=str(tmp_path / "run"), model=model_dir, rollout="openai", rollout_url=url,
                      rollout_model="tiny", **{**TINY, "max_steps": 2, "lr": 3e-2, **kw})
    return SGPOTrainer(cfg, judge=FunctionJudge(hash_first_error, step_mode="line"))


def _greedy_ids(trainer) -> list[int]:
    return sgpo_engine.generate(trainer.policy, [GREEDY_PROMPT], max_new_tokens=12, temperature=0)[0][0].token_ids


GREEDY_PROMPT = tasks.ArithSource(1, 2, 7).batch(0, 1)[0].prompt


def _server_greedy_ids(server, trainer) -> list[int]:
    from test_serve import request
    ids = encode_prompt(trainer.policy, GREEDY_PROMPT, False)
    status, body = request(server.url + "/completions", "POST", {"prompt": ids, "max_tokens": 12, "temperature": 0,
                                                                  "return_token_ids": True})
    assert status == 200, body
    return body["choices"][0]["token_ids"]


@pytest.mark.parametrize("sync", ["disk", "none"])
def test_synced_server_samples_from_the_trainers_weights(tmp_path, model_dir, sync):
    with _serve(model_dir) as server:
        with pytest.warns(UserWarning, match="off-policy") if sync == "none" else contextlib.nullcontext():
            trainer = _trainer(tmp_path, model_dir, server.url, rollout_sync=sync)
        w0 = params(trainer.policy)
        start = _greedy_ids(trainer)
        history = trainer.train()
        assert max_diff(params(trainer.policy), w0) > 1e-3  # a high learning rate moved the weights
        assert _greedy_ids(trainer) != start
        if sync == "disk":
            assert _server_greedy_ids(server, trainer) == _greedy_ids(trainer)  # on-policy
            assert [m["weight_version_lag"] for m in history] == [0, 0]
            assert all(m["rollout_sync_seconds"] > 0 for m in history)
            assert server.batcher.weight_version == "2"
            assert os.listdir(tmp_path / "run" / "rollout_weights") == ["step-2"]  # older ones pruned
        else:
            assert _server_greedy_ids(server, trainer) == start  # still the first weights
            assert [m["weight_version_lag"] for m in history] == [0, 1]  # and the lag says so


def test_rollout_takes_the_servers_token_ids_and_logprobs(tmp_path, model_dir):
    with _serve(model_dir) as server:
        trainer = _trainer(tmp_path, model_dir, server.url[:-len("/v1")])  # the server root works too
        examples = trainer.source.batch(0, 2)
        groups = trainer.rollout(examples, [11, 12])
        for group in groups:
            for c in group:
                assert c.weight_version == "0" and c.logprobs is None
                assert len(c.server_logprobs) == len(c.token_ids) > 0
                assert all(x <= 0 for x in c.server_logprobs)
        # the trainer's own log-probs of those very tokens match the server's (same weights, fp32)
        m = trainer.train_step()
        assert m["is_ratio_mean"] == pytest.approx(1.0, abs=1e-4)
        assert 1 - 1e-3 < m["is_ratio_min"] <= m["is_ratio_max"] < 1 + 1e-3
        assert m["is_capped_frac"] == 0.0


CAP = 1 + 2 ** -10  # exact in fp32


def test_a_bf16_server_moves_the_is_ratios_and_the_cap_bounds_them(tmp_path, model_dir):
    with _serve(model_dir, dtype="bf16") as server:
        trainer = _trainer(tmp_path, model_dir, server.url, rollout_is="token_truncate", rollout_is_cap=CAP,
                           max_steps=1)
        batches = []
        update = trainer._update
        trainer._update = lambda batch: batches.append(batch) or update(batch)
        m = trainer.train()[0]
    assert m["is_ratio_max"] - m["is_ratio_min"] > 1e-3  # bf16 sampling vs fp32 scoring: visible
    assert m["is_capped_frac"] > 0
    b = batches[0]
    w, ratio = rollout_is_weights(b.old_logp, b.server_logp, b.mask, "token_truncate", CAP)
    assert float(w.max()) <= CAP < float(ratio.max())  # the cap took effect


def test_a_killed_server_stops_training_with_a_named_error(tmp_path, model_dir):
    server = _serve(model_dir)
    trainer = _trainer(tmp_path, model_dir, server.url, max_steps=4, save_every=1)
    rollout = trainer.rollout

    def dies_at_step_2(examples, seeds):
        if trainer.step == 2:
            server.close()
        return rollout(examples, seeds)

    trainer.rollout = dies_at_step_2
    with pytest.raises(RolloutSyncError, match="rollout_url"):
        trainer.train()
    assert trainer.step == 2
    step, path = ckpt.list_checkpoints(str(tmp_path / "run"))[-1]
    assert step == 2 and max_diff(params(sgpo_engine.load(path)), params(trainer.policy)) == 0


def test_a_lagging_server_is_refused(tmp_path, model_dir):
    with _serve(model_dir) as server:
        trainer = _trainer(tmp_path, model_dir, server.url, max_steps=3)
        trainer._sync_rollout()
        trainer.train_step()
        trainer._sync_rollout()  # as train() does after the step
        server.batcher.weight_version = "0"  # another client rolled the server back
        with pytest.raises(RolloutSyncError, match="max_staleness"):
            trainer.train_step()


def test_weight_sync_errors_name_the_server(tmp_path, model_dir):
    policy = sgpo_engine.load(model_dir)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(RolloutSyncError, match="update_weights_from_disk.*weight_version 3"):
        WeightSync(dead, str(tmp_path / "w"), retries=1, backoff=0.0, timeout=5)(policy, 3)
    wide = tasks.new_policy(seed=1)
    with _serve(model_dir) as server:  # a model the server cannot take: refused at once, old weights kept
        other = sgpo_engine.Policy.from_config(
            type(wide.config)(**{**wide.config.__dict__, "hidden_size": wide.config.hidden_size * 2}),
            wide.tokenizer, seed=0)
        with pytest.raises(RolloutSyncError, match="shape"):
            WeightSync(server.url, str(tmp_path / "w2"), retries=3, backoff=0.0)(other, 1)
        assert server.batcher.weight_version == "0"


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
def test_is_weights_follow_the_modes(mode, gen):
    N, T, cap = 5, 7, 1.3
    old = -torch.rand(N, T, generator=gen, dtype=torch.float64) * 3
    server = old + (torch.rand(N, T, generator=gen, dtype=torch.float64) - 0.5) * 0.6
    mask = (torch.rand(N, T, generator=gen) > 0.3).double()
    mask[0] = 0.0      # an empty row
    mask[1] = 0.0
    mask[1, 3] = 1.0   # a one-token row
    w, ratio = rollout_is_weights(old, server, mask, mode, cap)
    for i in range(N):
        for t in range(T):
            if mode.startswith("token"):
                r = math.exp(float(old[i, t] - server[i, t]) * float(mask[i, t]))
            else:
                r = math.exp(float(((old[i] - server[i]) * mask[i]).sum()))
            want = (min(r, cap) if mode.endswith("truncate") else (r if r <= cap else 0.0)) * float(mask[i, t])
            assert float(ratio[i, t]) == pytest.approx(r, rel=1e-12)
            assert float(w[i, t]) == pytest.approx(want, rel=1e-12, abs=0)
    assert (w[0] == 0).all()


def test_urls_take_the_api_root_or_the_server_root():
    for given in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"):
        assert openai_base(given) == "http://h:8000/v1" and server_root(given) == "http://h:8000"
    assert openai_base("https://api.example.com/openai/v2") == "https://api.example.com/openai/v2"
