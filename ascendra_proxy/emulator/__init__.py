"""An HTTP server that speaks vLLM's or SGLang's wire format around the engine model.

Start one from the command line::

    ascendra-proxy emulate --flavor vllm --profile a100-llama3-8b --port 8001 --time-scale 0.1

from an async test (127.0.0.1, a free port; see :mod:`.server`)::

    async with run_emulator(EmulatorConfig(flavor="sglang", time_scale=0.02)) as emu:
        ...  # emu.url, emu.engine, emu.set_faults(FaultConfig(...)), emu.crash()

or as a child process (:func:`.process.emulator_process`).  Module map: ``server`` (app
factory, admin routes, test helper), ``runner`` (real-time step loop), ``stream`` (per-request
outputs, stop strings), ``serving`` (admission, SSE pump, disconnects), ``vllm_api`` /
``vllm_render`` and ``sglang_api`` / ``sglang_render`` (the two wire flavours), ``metrics``,
``faults``, ``params`` / ``errors`` (request validation, error bodies), ``cli``.
"""
