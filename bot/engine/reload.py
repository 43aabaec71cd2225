"""Hot reload: edited flows and templates served without a restart.

`Reloader` polls the modification times of `flows/*.yaml` and
`message_templates/*.j2` once a second (no extra dependency, works on every
filesystem) and can be asked to reload at once (`tracbot serve` does on
SIGHUP). A change is checked with the same checker as `tracbot check`;
with any problem the change is refused, each problem is logged, and the
version already loaded keeps serving. A valid change is swapped into the
engine whole, between two messages: the templates as they were checked (the
renderer serves that copy, never the files), and the flows. The check and
the compiling run on a thread, so the webhook's loop keeps answering
(it paused for the whole check before, ~100 ms for the shipped flows); only
the swap runs on the loop. A flow whose
file was deleted is logged at WARNING; drivers left in it start over.
The watcher never stops on an error: it logs it and keeps watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from bot.aio import wait_event
from bot.engine.check import Templates, check_project
from bot.engine.engine import Engine, Loaded, compile_version
from bot.engine.flows import FlowSpec, load_flows
from bot.engine.replies import Renderer
from bot.errors import FlowError

log = logging.getLogger("tracbot.engine")

Snapshot = dict[Path, tuple[int, int]]
# What a reload's check and compiling give the loop: a version to install,
# None when refused, or CHANGED when the flows changed under the check.
CHANGED = object()
Prepared = tuple[dict[str, FlowSpec], Loaded] | None | object


class Reloader:
    """Watches the flow and template folders of an engine; see the module."""

    def __init__(
        self,
        engine: Engine,
        flows_dir: Path,
        templates_dir: Path,
        interval: float = 1.0,
    ) -> None:
        self.engine = engine
        self.flows_dir = flows_dir
        self.templates_dir = templates_dir
        self.interval = interval
        self.reloads = 0
        self.refusals = 0
        # Why the files on disk were refused at the last reload, until one
        # is taken: the previous version serves, but a restart would refuse
        # to start (/readyz warns of it).
        self.refused: str | None = None
        self._seen = self.snapshot()
        self._asked = asyncio.Event()

    def snapshot(self) -> Snapshot:
        """Modification time and size of every watched file."""
        files = [*self.flows_dir.glob("*.yaml"), *self.templates_dir.glob("*.j2")]
        found: Snapshot = {}
        for path in files:
            with contextlib.suppress(OSError):
                stat = path.stat()
                found[path] = (stat.st_mtime_ns, stat.st_size)
        return found

    def request(self) -> None:
        """Reload at the next tick whatever the files look like (SIGHUP)."""
        self._asked.set()

    async def run(self) -> None:
        """Watch until cancelled."""
        while True:
            await wait_event(self._asked, self.interval)
            try:
                await self._tick()
            except Exception:
                # One bad edit or a filesystem hiccup must not end hot reload.
                self.refusals += 1
                log.exception("reload failed; the previous version keeps serving")

    async def _tick(self) -> None:
        asked = self._asked.is_set()
        self._asked.clear()
        now = self.snapshot()
        if asked or now != self._seen:
            self._seen = now
            await self.reload_off_loop()

    def reload(self) -> bool:
        """Check and load the folders; swap them in if valid. Return success."""
        return self._install(self._prepare())

    async def reload_off_loop(self) -> bool:
        """`reload`, with the check and the compiling on a thread."""
        return self._install(await asyncio.to_thread(self._prepare))

    def _prepare(self) -> Prepared:
        # Files and compiling only: nothing here touches the engine.
        before = self._flow_texts()
        templates = Templates(self.templates_dir)
        problems = check_project(self.flows_dir, self.templates_dir, templates)
        if problems:
            self.refused = f"{len(problems)} problem(s), the first: {problems[0]}"
            for problem in problems:
                log.error("reload refused: %s", problem)
            log.error(
                "reload refused problems=%d; the previous version keeps serving",
                len(problems),
            )
            return None
        try:
            flows = load_flows(self.flows_dir)
            if self._flow_texts() != before:
                # Written between the check and the load: what would be
                # served is not what was checked. The watcher sees the change
                # and checks again.
                log.info("flows changed while being checked; checking again")
                return CHANGED
            renderer = Renderer(self.templates_dir, templates.sources)
            return flows, compile_version(flows, renderer)
        except (FlowError, OSError) as exc:
            self.refused = str(exc)
            log.error("reload refused: %s", exc)
            return None

    def _flow_texts(self) -> dict[Path, bytes]:
        texts = {}
        for path in self.flows_dir.glob("*.yaml"):
            with contextlib.suppress(OSError):
                texts[path] = path.read_bytes()
        return texts

    def _install(self, prepared: Prepared) -> bool:
        if prepared is CHANGED:
            self._asked.set()
            return False
        if prepared is None:
            self.refusals += 1
            return False
        flows, loaded = prepared
        before = {name: flow.spec.version for name, flow in self.engine.flows.items()}
        sources = dict(self.engine.renderer.sources)
        self.engine.install(loaded)
        self.reloads += 1
        self.refused = None
        for name in sorted(before.keys() - flows.keys()):
            log.warning("flow removed flow=%s; drivers in it start over", name)
        # What changed, by name: every flow's hash said nothing of which
        # one an author had just edited.
        renderer = loaded[1]
        changed = [n for n, s in sorted(flows.items()) if before.get(n) != s.version]
        edited = sorted(
            name
            for name in sources.keys() | renderer.sources.keys()
            if sources.get(name) != renderer.sources.get(name)
        )
        log.info(
            "flows reloaded changed=%s templates changed=%s (%d flows, %d templates)",
            ",".join(changed) or "-",
            ",".join(edited) or "-",
            len(flows),
            len(renderer.sources),
        )
        return True
