"""Switch the gateway to bundle N without downtime, or back (a rollback is a deploy of the old version).

`Deployer.deploy(N)`: verify bundle N (checksums, encoder ↔ index binding) → Triton serves the old and
the new model versions side by side → prepare the new state (its own index, the added items re-encoded
by the new encoder) → warm it up → swap atomically → wait until no request still uses the old state →
Triton unloads the old versions. Anything failing before the swap leaves the old bundle serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from .bundle import Bundle, BundleError, load_bundle
from .model_control import ModelControlError, TritonModelControl
from .recommend import Recommender, run_to_completion
from .requests import RecommendQuery, RequestError
from .state import ServingState, prepare_state

log = logging.getLogger("lmrec.deploy")


def served_models(bundle: Bundle) -> dict[str, int]:
    """Triton model → version that this bundle calls."""
    models = {bundle.encoder_model: bundle.encoder_version}
    if bundle.ranker_model is not None:
        models[bundle.ranker_model] = int(bundle.ranker_version)
    return models


def encode_with(encoder, bundle: Bundle, timeout_s: float = 120.0):
    async def encode(texts: list[str]):
        return await encoder.encode(texts, model=bundle.encoder_model, version=bundle.encoder_version,
                                    timeout_s=timeout_s, max_batch_size=bundle.encoder_max_batch_size)
    return encode


async def pin_models(control: TritonModelControl, bundle: Bundle) -> None:
    """Make Triton serve exactly this bundle's model versions (at gateway start)."""
    for model, version in served_models(bundle).items():
        await control.serve_versions(model, {version})


async def keep_models_loaded(deployer: "Deployer", interval_s: float = 1.0) -> None:
    """Reload the serving bundle's model versions when Triton lost them (a restarted Triton loads only
    what its command line names): with this, the gateway leaves degraded mode by itself."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await _reload_lost_models(deployer)
        except Exception:  # noqa: BLE001 - the watcher must outlive any one failed check
            log.exception("checking Triton's served model versions failed; trying again in %.0fs", interval_s)


async def _reload_lost_models(deployer: "Deployer") -> None:
    bundle = deployer.recommender.state.bundle
    for model, version in served_models(bundle).items():
        if deployer.busy:
            return
        if await deployer.control.is_ready(model, version) or not await deployer.control.is_live():
            continue
        # A deploy may have started, or finished, during the checks above: pinning this bundle's version
        # now would unload the versions it serves.
        if deployer.busy or deployer.recommender.state.bundle is not bundle:
            return
        # Pinning holds the deployer's lock (free just above, so taken at once): a deploy that starts
        # meanwhile waits for this load, instead of sending its own that Triton could finish first, and this
        # one then unload the new version.
        async with deployer.exclusive():
            try:
                await deployer.control.serve_versions(model, {version})
                log.warning("Triton had lost %s version %s; loaded it again", model, version)
            except ModelControlError as error:
                log.warning("Triton is up but cannot load %s version %s yet: %s", model, version, error)


class Deployer:
    def __init__(self, recommender: Recommender, build_dir: Path, control: TritonModelControl, *,
                 retriever: str = "hnsw", drain_timeout_s: float = 30.0) -> None:
        self.recommender = recommender
        self.build_dir = Path(build_dir)
        self.control = control
        self.retriever = retriever
        self.drain_timeout_s = drain_timeout_s
        self._lock = asyncio.Lock()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def exclusive(self) -> asyncio.Lock:
        """The lock a deploy holds from start to end; the model watcher holds it while it pins versions."""
        return self._lock

    async def deploy(self, version: int) -> tuple[str, str, float]:
        """Returns (new version, previous version, seconds).

        A deploy, once started, runs to its end even when the call is cancelled (a client deadline, Ctrl-C
        of `lmrec deploy`): stopping half-way would leave Triton serving two versions of each model, or the
        old versions loaded after the switch. The caller still sees the cancellation; the log and the
        `deploys_total` metric say how the deploy ended.
        """
        if version <= 0:
            self.recommender.metrics.deploy("refused")
            raise RequestError("INVALID_ARGUMENT", f"version must be a positive bundle number, got {version}")
        return await run_to_completion(self._deploy(version))

    async def _deploy(self, version: int) -> tuple[str, str, float]:
        metrics = self.recommender.metrics
        async with self._lock:
            started = time.perf_counter()
            old = self.recommender.state
            if version == old.bundle.version:
                return old.label, old.label, 0.0
            try:
                bundle = await asyncio.to_thread(load_bundle, self.build_dir, version, retriever=self.retriever)
            except (BundleError, OSError, ValueError, KeyError) as error:
                metrics.deploy("refused")
                raise RequestError("FAILED_PRECONDITION",
                                   f"bundle {version} refused ({error}); bundle {old.label} keeps serving") from None
            old_models, new_models = served_models(old.bundle), served_models(bundle)
            async with self.recommender.catalogue_lock:
                try:
                    for model, new_version in new_models.items():
                        await self.control.serve_versions(model, {new_version} | ({old_models[model]}
                                                                                  if model in old_models else set()))
                    state = await prepare_state(bundle, await asyncio.to_thread(self.recommender.events.items),
                                                encode_with(self.recommender.encoder, bundle))
                    await self._warm_up(state)
                except Exception as error:  # whatever went wrong, the old bundle must keep serving
                    await self._restore(old_models, new_models)
                    metrics.deploy("failed")
                    raise RequestError("ABORTED", f"deploy of bundle {version} failed ({error}); "
                                                  f"bundle {old.label} keeps serving") from None
                self.recommender.state = state  # the switch: new requests take the new state from here on
                self.recommender.forget_cached()
                metrics.set_bundle_version(bundle.version)
            await self._drain(old)
            for model in old_models:
                try:
                    if model in new_models:
                        if old_models[model] != new_models[model]:
                            await self.control.serve_versions(model, {new_models[model]})
                    else:
                        await self.control.unload(model)
                except ModelControlError as error:  # serving is already on the new versions: log, don't fail
                    log.warning("could not unload %s version %s: %s", model, old_models[model], error)
            metrics.deploy("ok")
            seconds = time.perf_counter() - started
            log.info("deployed bundle %s (was %s) in %.1fs", bundle.label, old.label, seconds)
            return bundle.label, old.label, seconds

    async def _warm_up(self, state: ServingState, *, budget_s: float = 30.0) -> None:
        """A real request through every stage of the new state (encoder, index, CF, ranker), answered in
        full. Degraded answers are retried within `budget_s`: under traffic, a failure of a request on the
        old versions opens the encoder client's short circuit breaker, and that says nothing about the new
        versions."""
        # A session with one catalogue item, not a known user: it needs the encoder, the index, the ALS
        # fold-in and the ranker all the same, and no user's erasure (ForgetUser) can make it NOT_FOUND.
        item_ids = state.catalogue.item_ids
        query = RecommendQuery(recent_item_ids=(item_ids[0],), k=10) if item_ids else RecommendQuery(text="popular", k=10)
        deadline = time.monotonic() + budget_s
        pause = float(getattr(self.recommender.encoder, "retry_after_s", 0.5))
        while True:
            result = await self.recommender._recommend(state, query, timeout_s=60.0)
            if not result.degraded:
                return
            if time.monotonic() + pause > deadline:
                raise RequestError("UNAVAILABLE", f"the warm-up request was answered in degraded mode for "
                                                  f"{budget_s:.0f}s")
            await asyncio.sleep(pause)

    async def _drain(self, old: ServingState) -> None:
        deadline = time.monotonic() + self.drain_timeout_s
        while old.inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if old.inflight:
            log.warning("%d requests still on bundle %s after %.0fs; unloading anyway", old.inflight, old.label,
                        self.drain_timeout_s)

    async def _restore(self, old_models: dict[str, int], new_models: dict[str, int]) -> None:
        """Triton back to serving exactly the old bundle's versions, after a failed deploy; a model only the
        new bundle uses (a ranker, deploying a fused bundle over a blend one) is unloaded."""
        for model, version in old_models.items():
            try:
                await self.control.serve_versions(model, {version})
            except ModelControlError as error:
                log.error("could not restore %s version %s: %s", model, version, error)
        for model in new_models.keys() - old_models.keys():
            try:
                await self.control.unload(model)
            except ModelControlError as error:
                log.error("could not unload %s after the failed deploy: %s", model, error)
