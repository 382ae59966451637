"""`make demo` / `lmrec demo`: build on the chosen data set, serve it for real, query it, shut down."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmrec.export.build import BuildConfig, build_bundle


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    build: BuildConfig
    rebuild: bool = False
    k: int = 5


def _banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def run_demo(config: DemoConfig) -> None:
    from lmrec.client import RecommenderClient, format_items
    from lmrec.server.bundle import complete_versions, load_bundle
    from lmrec.server.serve import ServeConfig, running_stack

    build_dir = config.build.output_dir
    versions = complete_versions(build_dir)
    if config.rebuild or not versions:
        _banner(f"building {config.build.data.dataset} into {build_dir}")
        build_bundle(config.build)
    else:
        print(f"using bundle {versions[-1]} in {build_dir} (--rebuild to build a new one)")
    bundle = load_bundle(build_dir)
    dataset = bundle.dataset
    histories = dataset.histories()
    # Example users: the one with the median history length and the most active one.
    lengths = np.array([len(h) for h in histories])
    users = [dataset.user_ids[int(np.argsort(lengths)[len(lengths) // 2])], dataset.user_ids[int(lengths.argmax())]]
    session_items = [dataset.item_ids[int(i)] for i in histories[0][-3:]]
    probe_item = dataset.item_ids[int(np.argmax(bundle.popularity))]

    _banner("starting Triton and the gateway")
    with running_stack(ServeConfig(build_dir=build_dir, port=0)) as address, \
            RecommenderClient(address) as client:
        print(f"health: {client.health()}")
        for user in users:
            _banner(f"Recommend user {user} (k={config.k})")
            response = client.recommend(user, k=config.k)
            print(f"profile: {response.profile_text[:300]}")
            print(format_items(response))
        _banner(f"Recommend for an anonymous session that just saw items {session_items}")
        response = client.recommend(recent_item_ids=session_items, k=config.k)
        print(format_items(response))
        query = dataset.items[0].categories[0] if dataset.items[0].categories else dataset.items[0].title
        _banner(f"Recommend from free text: {query!r}")
        print(format_items(client.recommend(text=f"I am in the mood for {query}", k=config.k)))
        _banner(f"SimilarItems to item {probe_item} ({dataset.items[bundle.item_index[probe_item]].title})")
        print(format_items(client.similar(probe_item, k=config.k)))
        _banner(f"SimilarItems to the text {query!r}")
        print(format_items(client.similar(text=query, k=config.k)))
        _banner("stopping")
    print("demo finished: Triton and the gateway are stopped")
