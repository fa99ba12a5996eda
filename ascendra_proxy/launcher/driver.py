"""The thin Docker side of the launcher: check, start, watch and stop a plan's containers.

Theory of operation.  :func:`connect` opens the Docker SDK client from the environment
(``DOCKER_HOST`` or the local socket) and pings it, so "no Docker" is one clear error before
anything starts.  :meth:`DockerDriver.preflight` refuses a launch that cannot work: an image
that is not on the host (the launcher never pulls: engine images are tens of GB and the
user should choose when to fetch them), a GPU held by a container of another launch, or a
host port already taken.  :meth:`DockerDriver.start` turns a :class:`ContainerSpec` into
SDK arguments (:func:`create_kwargs`; the GPU claim is a ``DeviceRequest`` for exactly the
backend's device ids) and starts it.  :meth:`DockerDriver.wait_healthy` polls every
container's ``GET /health`` through its published port and watches the container state, so
an engine that crashes fails the launch at once with its last log lines instead of after the
timeout.  Every container carries labels with the launch's run id; :meth:`stop_run` stops and
removes exactly those, :meth:`stop_all` everything any launch left behind.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from ascendra_proxy.launcher.plan import (
    LABEL_BACKEND,
    LABEL_GPUS,
    LABEL_MANAGED,
    LABEL_RUN,
    ContainerSpec,
    LaunchError,
    LaunchPlan,
)

__all__ = ["DockerDriver", "connect", "create_kwargs"]

Log = Callable[[str], None]
LOG_TAIL = 30  # log lines shown when an engine fails
STOP_TIMEOUT_S = 10


def create_kwargs(spec: ContainerSpec, gpu_requests: bool = True) -> dict[str, Any]:
    """Keyword arguments of ``client.containers.create`` for ``spec``."""
    from docker.types import DeviceRequest

    kwargs: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command),
        "name": spec.name,
        "labels": dict(spec.labels),
        "environment": dict(spec.environment),
        "ports": {f"{spec.container_port}/tcp": (spec.host_ip, spec.host_port)},
        "init": True,  # a real PID 1: signals reach the engine, stop is prompt, zombies reaped
    }
    if spec.entrypoint:
        kwargs["entrypoint"] = [spec.entrypoint]
    if spec.mounts:
        kwargs["volumes"] = {
            m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in spec.mounts
        }
    if spec.ipc_host:
        kwargs["ipc_mode"] = "host"
    if gpu_requests and spec.gpu_ids:
        kwargs["device_requests"] = [
            DeviceRequest(driver="nvidia", device_ids=spec.device_ids, capabilities=[["gpu"]])
        ]
    return kwargs


def connect(log: Log, gpu_requests: bool = True) -> DockerDriver:
    """A driver on the Docker engine of this environment; LaunchError if there is none."""
    try:
        import docker
    except ImportError:
        raise LaunchError("the launcher needs the Docker SDK: pip install docker") from None
    where = os.environ.get("DOCKER_HOST", "the local socket /var/run/docker.sock")
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise LaunchError(
            f"cannot reach a Docker engine at {where}: {exc}\n"
            "Is dockerd running, and may this user use its socket (group docker)? "
            "`launch --dry-run` shows the plan without Docker."
        ) from None
    return DockerDriver(client, log, gpu_requests)


def _image_hint(image: str, emulated: bool) -> str:
    if emulated:
        return f"  {image}: build it from the repository root: docker build -t {image} ."
    flag = "--image-sglang" if "sglang" in image else "--image-vllm"
    return f"  {image}: fetch it with `docker pull {image}`, or name a local image with {flag}"


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class DockerDriver:
    def __init__(self, client: Any, log: Log, gpu_requests: bool = True) -> None:
        self.client = client
        self.log = log
        self.gpu_requests = gpu_requests

    # -- before anything starts -----------------------------------------------------------

    def preflight(self, plan: LaunchPlan) -> None:
        self._check_images(plan.containers)
        self._check_gpus(plan.containers)
        self._check_ports(plan.containers)

    def _check_images(self, specs: Iterable[ContainerSpec]) -> None:
        import docker

        missing: dict[str, bool] = {}
        for spec in specs:
            try:
                self.client.images.get(spec.image)
            except docker.errors.ImageNotFound:
                missing[spec.image] = spec.emulated
        if missing:
            hints = "\n".join(_image_hint(img, emulated) for img, emulated in missing.items())
            raise LaunchError(
                "image not on this Docker host (the launcher does not pull):\n" + hints
            )

    def _check_gpus(self, specs: Iterable[ContainerSpec]) -> None:
        held: dict[str, str] = {}
        for c in self.client.containers.list(filters={"label": f"{LABEL_MANAGED}=1"}):
            labels = c.labels or {}
            for gpu in filter(None, labels.get(LABEL_GPUS, "").split(",")):
                held[gpu] = f"{c.name} (backend {labels.get(LABEL_BACKEND, '?')})"
        for spec in specs:
            for gpu in spec.device_ids:
                if gpu in held:
                    raise LaunchError(
                        f"GPU {gpu} for backend {spec.backend} is taken by running container "
                        f"{held[gpu]} of an earlier launch; stop it with "
                        "`ascendra-proxy launch --cleanup`"
                    )

    def _check_ports(self, specs: Iterable[ContainerSpec]) -> None:
        for spec in specs:
            if not _port_free(spec.host_ip, spec.host_port):
                raise LaunchError(
                    f"port {spec.host_ip}:{spec.host_port} of backend {spec.backend} is already "
                    "in use on this machine; free it or change the backend's url"
                )

    # -- start and watch ------------------------------------------------------------------

    def start(self, spec: ContainerSpec) -> None:
        import docker

        kwargs = create_kwargs(spec, self.gpu_requests)
        gpus = ",".join(spec.device_ids) if self.gpu_requests else "none requested"
        self.log(
            f"starting {spec.backend}: {spec.image} on GPU {gpus}, "
            f"{spec.host_ip}:{spec.host_port} -> {spec.container_port} ({spec.name})"
        )
        try:
            container = self.client.containers.create(**kwargs)
        except docker.errors.APIError as exc:
            raise LaunchError(f"cannot create {spec.name}: {exc.explanation or exc}") from None
        try:
            container.start()
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            reason = str(exc.explanation or exc)
            hint = ""
            if "device driver" in reason or "nvidia" in reason.lower():
                hint = (
                    "\nThe GPU request needs the NVIDIA Container Toolkit on this host "
                    "(without GPUs: --emulate --no-gpu-requests)."
                )
            raise LaunchError(f"cannot start {spec.name}: {reason}{hint}") from None

    def wait_healthy(
        self,
        specs: Iterable[ContainerSpec],
        timeout_s: float,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        start = clock()
        pending = list(specs)
        while pending:
            for spec in list(pending):
                self._fail_if_stopped(spec)
                if _http_ok(spec.health_url):
                    pending.remove(spec)
                    self.log(f"{spec.backend} healthy after {clock() - start:.1f} s")
            if pending and clock() - start > timeout_s:
                spec = pending[0]
                raise LaunchError(
                    f"backend {spec.backend} ({spec.name}, {spec.image}) is not healthy after "
                    f"{timeout_s:.0f} s (GET {spec.health_url}); last log lines:\n"
                    + self._tail(spec.name)
                )
            if pending:
                sleep(poll_s)

    def _fail_if_stopped(self, spec: ContainerSpec) -> None:
        import docker

        try:
            container = self.client.containers.get(spec.name)
        except docker.errors.NotFound:
            raise LaunchError(
                f"backend {spec.backend}: container {spec.name} was removed while starting"
            ) from None
        if container.status in ("exited", "dead"):
            code = container.attrs.get("State", {}).get("ExitCode")
            raise LaunchError(
                f"backend {spec.backend}: container {spec.name} stopped (exit code {code}) "
                "before it became healthy; last log lines:\n" + self._tail(spec.name)
            )

    def _tail(self, name: str) -> str:
        import docker

        try:
            raw = self.client.containers.get(name).logs(tail=LOG_TAIL)
        except docker.errors.APIError as exc:
            return f"  (no logs: {exc})"
        text = raw.decode("utf-8", errors="replace").rstrip()
        return "\n".join(f"  | {line}" for line in text.splitlines()) or "  (empty log)"

    # -- stop -------------------------------------------------------------------------------

    def stop_run(self, run_id: str) -> int:
        """Stop and remove every container of launch ``run_id``; returns how many."""
        return self._remove([f"{LABEL_MANAGED}=1", f"{LABEL_RUN}={run_id}"])

    def stop_all(self) -> int:
        """Stop and remove every container any launch started."""
        return self._remove([f"{LABEL_MANAGED}=1"])

    def _remove(self, label_filters: list[str]) -> int:
        import docker

        containers = self.client.containers.list(all=True, filters={"label": label_filters})
        for c in containers:
            with contextlib.suppress(docker.errors.APIError):
                c.stop(timeout=STOP_TIMEOUT_S)
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)
        return len(containers)
