"""The field's loop on spoken talks: `simulstream_inference` with our speech processor, scored by
`omnisteval longform`, equals `hpo-ray eval` on the same talks; KV reuse holds in the processor;
simulstream's own server streams a talk back as text.

What "equal" means (docs/evaluation.md): the text of every talk and the delay of every unit are
identical, except the units of a talk's last, partial turn: simulstream stamps them with the audio
actually streamed (samples / 16 kHz), `hpo-ray eval` with the frames that cover it (a whole number
of 80 ms frames, so up to 80 ms later). BLEU/chrF are therefore equal exactly, and OmniSTEval's
LongLAAL of the simulstream log equals that of our instances.log once those delays are set to the
audio's end (to 1e-6 ms).
"""

import argparse
import asyncio
import json
import logging
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hpo_ray.cli import eval_cmd
from hpo_ray.config import load_config
from hpo_ray.data.manifest import Manifest
from hpo_ray.dialogue import DialogueLayout
from hpo_ray.synth.espeak import missing_reason

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")

FAST = ["rollout.validation_sampling.max_new_tokens=6", "rollout.validation_sampling.greedy=true", "logging.progress=false"]
SPOKEN = [
    "data.synth.talks=2",
    "data.synth.dev_fraction=0",
    "data.synth.test_fraction=0",
    "data.synth.min_talk_seconds=5",
    "data.synth.seed=5",
    "data.synth.speech.enabled=true",
    "data.synth.speech.workers=1",
    "logging.progress=false",
]


def cli(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def spoken(tmp_path_factory, tiny_policy_dir):
    """Two short spoken talks (their audio manifest) and a speech LLM: a fresh encoder + the tiny LLM."""
    from hpo_ray.speech.model import SpeechLLM
    from hpo_ray.synth import synthesize

    root = tmp_path_factory.mktemp("spoken")
    cfg = load_config(None, SPOKEN)
    synthesize(cfg, root / "data")
    # Synthetic talks are padded to whole chunks; a recording in the wild ends anywhere: cut the second
    # talk's trailing silence to end mid-frame, so its last turn is partial.
    _cut_tail(sorted((root / "data" / "train" / "audio").glob("*.wav"))[1], 8100)
    SpeechLLM.from_policy(tiny_policy_dir, cfg.model.speech).save_pretrained(root / "speech_llm")
    return root, root / "speech_llm", root / "data" / "train" / "audio_manifest.parquet"


@pytest.fixture(scope="module")
def field_run(spoken):
    """`hpo-ray eval --via simulstream` on the audio manifest at m=1, greedy (eval encodes it into encoded/)."""
    root, speech_llm, audio = spoken
    out = root / "hpo_simulstream" / "m1"  # where `hpo-ray demo` puts it for a speech policy
    argv = ["--checkpoint", str(speech_llm), "--data", str(audio), "--multiplier", "1", "--output", str(out), "--via", "simulstream", *FAST]
    assert cli(eval_cmd, argv) == 0
    return out, Manifest(out / "encoded" / "manifest.parquet")


def _cut_tail(wav: Path, samples: int) -> None:
    import wave

    with wave.open(str(wav), "rb") as f:
        params, pcm = f.getparams(), f.readframes(f.getnframes())
    with wave.open(str(wav), "wb") as f:
        f.setparams(params)
        f.writeframes(pcm[: len(pcm) - 2 * samples])


def _audio_seconds(wav: Path) -> float:
    import wave

    with wave.open(str(wav), "rb") as f:
        return f.getnframes() / f.getframerate()


def test_simulstream_log_has_our_text_and_delays(field_run):
    from simulstream.config import yaml_config
    from simulstream.metrics.readers import LogReader

    out, manifest = field_run
    field = out / "simulstream"
    logged = LogReader(yaml_config(str(field / "processor.yaml")), str(field / "metrics.jsonl")).final_outputs_and_latencies()
    instances = [json.loads(line) for line in (out / "instances.log").read_text().splitlines()]
    turn_seconds = json.loads((out / "scores.json").read_text())["turn_seconds"]
    assert len(logged) == len(instances) == len(manifest) == 2
    partial_turns = late_units = 0
    for inst, talk in zip(instances, manifest):
        ours = logged[talk.talk_id]
        assert ours.final_text == inst["prediction"]
        audio_end = _audio_seconds(field / "wavs" / f"{talk.talk_id}.wav")
        assert 0 <= talk.seconds - audio_end < 0.08  # frames cover the audio with < 1 frame of padding
        last_turn_start = math.floor(audio_end / turn_seconds - 1e-9) * turn_seconds
        partial_turns += talk.n_frames % 14 != 0
        for theirs, mine in zip(ours.ideal_delays, inst["delays"]):
            if mine / 1000 > last_turn_start + 1e-9:  # written after the last, partial turn
                assert mine / 1000 == pytest.approx(talk.seconds, abs=1e-6) and theirs == pytest.approx(audio_end, abs=1e-9)
                late_units += talk.seconds > audio_end
            else:
                assert theirs * 1000 == pytest.approx(mine, abs=1e-3)
        assert all(ca >= cu for ca, cu in zip(ours.computational_aware_delays, ours.ideal_delays))
    assert partial_turns == 1 and late_units > 0  # the case where the two loops' delays differ is exercised


def test_omnisteval_scores_the_simulstream_log_as_our_instances(field_run, tmp_path):
    from hpo_ray.serve.field_eval import run_omnisteval

    out, manifest = field_run
    field = json.loads((out / "simulstream" / "scores.json").read_text())
    theirs, ours = field["omnisteval"], field["omnisteval_of_instances_log"]
    assert theirs["BLEU"] == pytest.approx(ours["BLEU"], abs=1e-9) and theirs["chrF"] == pytest.approx(ours["chrF"], abs=1e-9)
    # Our instances.log with the last partial turn's units stamped at the audio's end instead.
    lines = []
    for line, talk in zip((out / "instances.log").read_text().splitlines(), manifest):
        inst = json.loads(line)
        audio_end = _audio_seconds(out / "simulstream" / "wavs" / f"{talk.talk_id}.wav") * 1000
        inst["delays"] = [audio_end if abs(d - talk.seconds * 1000) < 1e-3 else d for d in inst["delays"]]
        inst["elapsed"] = list(inst["delays"])
        lines.append(json.dumps(inst))
    (tmp_path / "instances.log").write_text("\n".join(lines) + "\n")
    fixed = run_omnisteval(out / "segments.yaml", out / "references.txt", tmp_path / "instances.log", tmp_path / "o", False, "13a")
    assert theirs["LongLAAL (CU)"] == pytest.approx(fixed["LongLAAL (CU)"], abs=1e-6)
    # Computation-aware: every unit's CA delay is at least its ideal one (first test), but LAAL's cutoff makes
    # the score itself non-monotone; our instances.log records no compute (elapsed = delays).
    assert math.isfinite(theirs["LongLAAL (CA)"]) and ours["LongLAAL (CA)"] == ours["LongLAAL (CU)"]
    assert field["rtf"] > 0 and math.isfinite(field["rtf"]) and field["hardware"]["cpu"]
    assert field["audio_seconds"] == pytest.approx(sum(_audio_seconds(p) for p in (out / "simulstream" / "wavs").iterdir()))


def test_each_processed_chunk_prefills_only_its_new_turn(field_run, tiny_tokenizer):
    out, manifest = field_run
    layout = DialogueLayout(tiny_tokenizer)
    turns = [json.loads(line) for line in (out / "simulstream" / "turns.jsonl").read_text().splitlines()]
    streams = sorted({t["stream"] for t in turns})
    assert len(streams) == len(manifest)
    for stream, talk in zip(streams, manifest):
        mine = [t for t in turns if t["stream"] == stream]
        assert [t["turn"] for t in mine] == list(range(len(mine)))
        assert sum(t["n_frames"] for t in mine) == talk.n_frames
        assert [t["n_frames"] for t in mine[:-1]] == [14] * (len(mine) - 1)
        cached = 0
        for k, t in enumerate(mine):
            assert t["user_tokens"] == len(layout.user_ids(t["n_frames"], first=k == 0))
            # before turn 0 the cache lacks the system prompt; later, the previous reply's closing token
            # (two when the reply was cut at max_new_tokens: its last token and the appended <|im_end|>)
            # (a slide of the bounded context re-prefills the kept window once; these short talks never slide)
            expected = (len(layout.system_ids("en", "de")),) if k == 0 else (1, 2)
            assert not t["slid"] and t["carried"] in expected
            assert t["prefilled"] == t["carried"] + t["user_tokens"]  # nothing earlier is computed again
            cached += t["prefilled"] + t["decoded"]
            assert t["cached"] == cached


def test_demo_report_shows_the_field_numbers_of_a_speech_policy(spoken, field_run, capsys):
    from hpo_ray.cli import demo_cmd

    root, speech_llm, _ = spoken
    cfg = load_config(None, [f"data.test_manifest={field_run[0] / 'encoded' / 'manifest.parquet'}", *FAST])
    rows = demo_cmd.field_scores(cfg, speech_llm, [1, 2], root)  # the run above is found, not repeated
    assert "already done, skipped" in capsys.readouterr().out
    field = json.loads((field_run[0] / "simulstream" / "scores.json").read_text())
    table = "\n".join(demo_cmd.field_table(rows))
    ideal, aware = (field["omnisteval"][k] / 1000 for k in ("LongLAAL (CU)", "LongLAAL (CA)"))
    assert f"| 1 | simulstream log | {field['omnisteval']['BLEU']:.2f} |" in table
    assert f"| {ideal:.3f} | {aware:.3f} |" in table and f"| {field['rtf']:.3f} |" in table
    assert f"measured on {field['hardware']['cpu']}" in table


def test_processor_config_mistakes_name_the_key(spoken):
    from types import SimpleNamespace

    from hpo_ray.config import ConfigError
    from hpo_ray.config.serve import StreamProcessorConfig
    from hpo_ray.serve.session import StreamingPolicy
    from hpo_ray.serve.simulstream_processor import processor_settings

    with pytest.raises(ConfigError, match="sampling.temprature"):
        processor_settings(SimpleNamespace(latency_unit="word", sampling=SimpleNamespace(temprature=0.5)))
    with pytest.raises(ConfigError, match="latency_unit"):
        processor_settings(SimpleNamespace(latency_unit="spm"))
    policy = StreamingPolicy(StreamProcessorConfig(checkpoint=spoken[1], latency_unit="char"))
    with pytest.raises(ConfigError, match="latency_unit.*de is scored in word units"):
        policy.open(policy.engine(), "en", "de")


def test_via_simulstream_without_audio_is_refused_before_anything_runs(spoken, field_run, tmp_path, capsys):
    speech_llm, features = spoken[1], field_run[0] / "encoded" / "manifest.parquet"
    bare = tmp_path / "features"
    bare.mkdir()
    (bare / "manifest.parquet").write_bytes(features.read_bytes())
    (bare / "features").symlink_to(features.parent / "features")
    argv = [
        "--checkpoint",
        str(speech_llm),
        "--data",
        str(bare / "manifest.parquet"),
        "--output",
        str(tmp_path / "out"),
        "--via",
        "simulstream",
        *FAST,
    ]
    assert cli(eval_cmd, argv) == 2
    assert "no encode.json beside it names the talks' audio; pass --audio" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"simulstream server exited: {proc.stderr.read()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"simulstream server did not listen on 127.0.0.1:{port} within {timeout} s")


def test_simulstream_server_streams_a_talk_back_as_text(field_run, tmp_path, caplog):
    from simulstream.client.wav_reader_client import stream_wav_files

    out, manifest = field_run
    talk = manifest.talks[0]
    port = _free_port()
    server_yaml = tmp_path / "server.yaml"
    server_yaml.write_text(
        yaml.safe_dump(
            {
                "hostname": "127.0.0.1",
                "port": port,
                "pool_size": 1,
                "acquire_timeout": 60,
                "metrics": {"enabled": True, "filename": str(tmp_path / "server_metrics.jsonl")},
            }
        )
    )
    processor = yaml.safe_load((out / "simulstream" / "processor.yaml").read_text())
    processor.pop("turn_log")
    (tmp_path / "processor.yaml").write_text(yaml.safe_dump(processor))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulstream.server.websocket_server",
            "--server-config",
            str(server_yaml),
            "--speech-processor-config",
            str(tmp_path / "processor.yaml"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_port(port, proc, timeout=180)
        wav = str(out / "simulstream" / "wavs" / f"{talk.talk_id}.wav")
        with caplog.at_level(logging.DEBUG, logger="simulstream.wav_reader_client"):
            asyncio.run(asyncio.wait_for(stream_wav_files(f"ws://127.0.0.1:{port}/", [wav], 100, "de", "en"), timeout=180))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    replies = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "simulstream.wav_reader_client" and r.getMessage().startswith("{")
    ]
    assert replies[-1] == {"end_of_processing": True}
    received = " ".join(r["new"] for r in replies[:-1] if r.get("new"))
    assert received and all(r.get("deleted") == "" for r in replies[:-1])
    assert received == _translate_in_process(out / "simulstream" / "processor.yaml", wav, 1600)


def _translate_in_process(processor_yaml: Path, wav: str, message_samples: int) -> str:
    """What our processor writes for the samples simulstream 1.0.0's wav client sends: the wav in
    messages of `message_samples`, then its last message once more (`send_audio` re-sends `data[i:]`)."""
    import numpy as np
    from simulstream.client.wav_reader_client import read_wav_file
    from simulstream.config import yaml_config

    from hpo_ray.serve.simulstream_processor import HpoRaySpeechProcessor

    config = yaml_config(str(processor_yaml))
    config.turn_log = None
    HpoRaySpeechProcessor.load_model(config)
    processor = HpoRaySpeechProcessor(config)
    _, data = read_wav_file(wav)
    last = (len(data) - 1) // message_samples * message_samples
    samples = np.concatenate([data, data[last:]]).astype(np.float32) / 2**15
    chunk = round(processor.speech_chunk_size * 16000)
    words = []
    for start in range(0, len(samples), chunk):
        words += processor.process_chunk(samples[start : start + chunk]).new_tokens
    return " ".join(words + processor.end_of_stream().new_tokens)
