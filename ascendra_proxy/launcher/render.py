"""Human-readable rendering of a launch plan (``launch --dry-run``).  Pure.

Each container is shown as its parts (image, GPUs and the device request Docker gets,
published port, command, environment, mounts, health URL) and as the equivalent
``docker run`` command line, which is also the quickest way to start one engine by hand
when debugging.  Secret-looking environment values (``*TOKEN*``, ``*KEY*``, ``*SECRET*``,
``*PASSWORD*``) are never printed: they show as hidden, and the ``docker run`` line passes
them by name (``-e HF_TOKEN``) so Docker copies them from the caller's environment.
"""

from __future__ import annotations

import re
import shlex

from ascendra_proxy.launcher.plan import ContainerSpec, LaunchPlan

__all__ = ["docker_run_line", "is_secret", "render_plan"]

_SECRET = re.compile(r"TOKEN|KEY|SECRET|PASSWORD", re.IGNORECASE)


def is_secret(name: str) -> bool:
    return bool(_SECRET.search(name))


def _env_shown(name: str, value: str) -> str:
    return f"{name}=<hidden>" if is_secret(name) else f"{name}={value}"


def docker_run_line(spec: ContainerSpec) -> str:
    """The ``docker run`` command that starts the same container."""
    argv = ["docker", "run", "-d", "--name", spec.name]
    for key, value in spec.labels:
        argv += ["--label", f"{key}={value}"]
    host = f"[{spec.host_ip}]" if ":" in spec.host_ip else spec.host_ip
    argv += ["-p", f"{host}:{spec.host_port}:{spec.container_port}"]
    if spec.gpu_ids:
        argv += ["--gpus", f'"device={",".join(spec.device_ids)}"']
    if spec.ipc_host:
        argv += ["--ipc", "host"]
    for mount in spec.mounts:
        argv += ["-v", f"{mount.source}:{mount.target}{':ro' if mount.read_only else ''}"]
    for name, value in spec.environment:
        argv += ["-e", name if is_secret(name) else f"{name}={value}"]
    if spec.entrypoint:
        argv += ["--entrypoint", spec.entrypoint]
    argv += [spec.image, *spec.command]
    return shlex.join(argv)


def _render_container(spec: ContainerSpec) -> list[str]:
    kind = f"{spec.engine}, emulated" if spec.emulated else spec.engine
    gpus = ",".join(spec.device_ids)
    argv = ([spec.entrypoint] if spec.entrypoint else []) + list(spec.command)
    lines = [
        f"{spec.backend}  (pool {spec.pool}, {kind})",
        f"  container  {spec.name}",
        f"  image      {spec.image}",
        f"  gpus       {gpus}   (device request: driver=nvidia device_ids={spec.device_ids} "
        "capabilities=[['gpu']])",
        f"  port       {spec.host_ip}:{spec.host_port} -> {spec.container_port}/tcp",
        f"  command    {shlex.join(argv)}",
    ]
    if spec.environment:
        env = ", ".join(_env_shown(k, v) for k, v in spec.environment)
        lines.append(f"  env        {env}")
    for mount in spec.mounts:
        lines.append(f"  mount      {mount.source} -> {mount.target}")
    lines += [
        f"  health     {spec.health_url}",
        f"  as docker  {docker_run_line(spec)}",
    ]
    return lines


def render_plan(plan: LaunchPlan) -> str:
    n = len(plan.containers)
    lines = [
        f"launch {plan.run_id}: would start {n} engine container{'s' if n != 1 else ''}, "
        f"wait for each GET /health, then serve the proxy on {plan.listen}",
        "",
    ]
    for spec in plan.containers:
        lines += [*_render_container(spec), ""]
    if plan.external:
        lines.append("backends without gpu_ids (not started, proxied as they are):")
        lines += [f"  {name}  {url}" for name, url in plan.external]
    return "\n".join(lines).rstrip() + "\n"
