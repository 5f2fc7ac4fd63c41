"""Helpers shared by the test modules, each in one place (the pytest fixtures stay in tests/conftest.py):

- configs:          run configs for tests (`small_config`, `llm_config` for an OpenAI-compatible endpoint)
- fake_llm_server:  a loopback OpenAI-compatible server with injectable faults (also runnable as a script)
- tcp_proxy:        a loopback TCP proxy that can take a service down and bring it back
- net:              free ports, polling until something is true (`wait_for`), "does this URL answer"
- corpus:           readers of corpus shards, labels from the corpus variants, a run's rules and texts
- s3:               copying a folder to S3, storage options for an S3 endpoint
- raters:           a LiteLLMRater over plain HTTP with fast retries, for the rater tests
- prefect_api:      the Prefect API of the session, reading every page of a listing
- pipeline:         the pipeline flow run twice (a run and its rerun)
- guard:            the rule that only tests marked `integration` start servers
- llama_server:     a real model on loopback: llama-cpp-python built once, SmolLM2, request counts
- runs:             runs whose end is known (the reference run), comparing two runs' selections
- kills, llm_process: killing runs and LLM-server processes in the resilience tests
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout
