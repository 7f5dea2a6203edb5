"""A process that has imported Snakemake, the modules the Snakefile imports and torch, torchvision and
timm (which the configuration check loads for ``torchvision:`` and ``timm:`` names), and
runs each ``snakemake`` command line of the tests in a child forked from it: the command runs
Snakemake's own entry point (``snakemake.cli.main``, what ``python -m snakemake`` calls) in a fresh
process, without the seconds of interpreter start and imports each command would otherwise take.

Protocol, one JSON object a line: the tests write ``{"id", "argv", "cwd", "stdout", "stderr",
"niceness"}`` to its stdin; it answers ``{"id", "pid"}`` once the child has started (a session of its
own, so that a timeout or a test can end it and its jobs), then ``{"id", "returncode"}`` once the
child has ended. Several children may run at once (the background runs beside the tests' commands).
``stdout`` and ``stderr`` may name the same file (one log of both); the child lowers its CPU priority
to ``niceness`` where that is lower than the server's. Started by :class:`workflow.SnakemakeServer`
with the tests' environment (:data:`workflow.ENV`)."""
import atexit
import json
import os
import selectors
import sys

#: what the Snakefile and Snakemake's command line load before they read a config; torchvision's and
#: timm's model registries are what the configuration check loads to check ``torchvision:`` and
#: ``timm:`` names (about 1.7 s and 1 s in each dry run of the tiny configuration otherwise)
PRELOAD = ("snakemake.cli", "snakemake.api", "preimage.config", "preimage.features", "preimage.representations",
           "torchvision.models.feature_extraction", "timm")


def run_child(request: dict) -> None:
    """The forked child: Snakemake's command line on ``request``; never returns."""
    code = 1
    try:
        os.setsid()
        niceness = request.get("niceness", 0)
        if niceness > os.nice(0):
            os.nice(niceness - os.nice(0))
        os.chdir(request["cwd"])
        write = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        streams = ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], write), (2, request["stderr"], write))
        for fd, path, flags in streams:
            if fd == 2 and path == request["stdout"]:
                os.dup2(1, 2)
                continue
            opened = os.open(path, flags, 0o644)
            os.dup2(opened, fd)
            os.close(opened)
        sys.argv = ["snakemake", *request["argv"]]
        import snakemake.cli

        try:
            snakemake.cli.main(request["argv"])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        atexit._run_exitfuncs()
    except BaseException:  # anything the command line did not handle: its traceback goes to its stderr
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a stream the command closed: nothing left to write
                pass
        os._exit(code)


def serve() -> None:
    """Answer requests from stdin until it closes (and the children still running have ended): each
    request forks a child at once; a child's end is seen through its pidfd."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    import gc

    gc.freeze()  # the preloaded modules: a child's collections leave them (and their pages) alone
    answer = sys.stdout

    def say(message: dict) -> None:
        answer.write(json.dumps(message) + "\n")
        answer.flush()

    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, None)
    pending, reading = b"", True
    while reading or len(selector.get_map()) > 0:
        for key, _ in selector.select():
            if key.data is not None:  # a child ended
                request_id, pid = key.data
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                say({"id": request_id, "returncode": os.waitstatus_to_exitcode(status)})
                continue
            data = os.read(0, 1 << 16)
            if not data:
                selector.unregister(0)
                reading = False
                continue
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    for child in list(selector.get_map().values()):  # the other children's pidfds
                        if child.data is not None:
                            os.close(child.fd)
                    selector.close()
                    run_child(request)
                say({"id": request["id"], "pid": pid})
                selector.register(os.pidfd_open(pid), selectors.EVENT_READ, (request["id"], pid))


if __name__ == "__main__":
    serve()
