"""What the workflow makes of a configuration: its jobs, per-analysis layer lists and the paths of
its results.

:class:`preimage.representations.Catalog` says what each representation is; :class:`Plan` says
what the workflow does with them: which decoders are trained, which layers every analysis of the
paper (§4, §5.3-5.5, Appendix A) and the Mahendran & Vedaldi baseline run on, which files under
``results/`` the ``all`` target asks for, and the parameters of a job that name a file there (an
autoencoder's fine-tuned encoder, the pixel decoder a loss variant starts from). The rule files
(``rules/common.smk``) ask it, and so do the library and benchmark callers that need a result's path.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional

from preimage.representations import ALEXNET_VECTOR_LAYERS, LOSS_VARIANTS, Catalog, per_rep

__all__ = ["ANALYSES", "SCORECARD_DECODERS", "Plan"]

#: The analyses configured under ``analyses.<name>.layers`` (besides ``perturbation``, whose
#: layers default to AlexNet's), in the order their layer lists are resolved.
ANALYSES = ("interpolation", "random_samples", "single_units", "dark_knowledge", "hue_shift", "locality", "scaling")


#: The decoders of one representation's features on the scorecard: its own and the Appendix A loss
#: variants (method → suffix of the variant's slug).
SCORECARD_DECODERS: Dict[str, str] = {"decoder": "", "decoder_feature": "-feature", "decoder_gan": "-gan"}


class Plan:
    """The jobs and result paths of one validated configuration. ``results`` overrides the
    configuration's ``results`` folder (a benchmark writing elsewhere)."""

    def __init__(self, config: Mapping[str, Any], catalog: Optional[Catalog] = None,
                 results: Optional[str] = None) -> None:
        self.config = config
        self.catalog = catalog if catalog is not None else Catalog(config)
        self.results = str(results if results is not None else config.get("results", "results"))
        # resolve every layer list once, so that :attr:`notes` names everything skipped
        self.perturbation_slugs()
        for analysis in ANALYSES:
            self.analysis_slugs(analysis)
        self.mahendran_vedaldi_slugs()

    @property
    def notes(self) -> List[str]:
        """What the configuration names but does not run, one line each (:attr:`Catalog.notes`)."""
        return self.catalog.notes

    # -- jobs -------------------------------------------------------------------------------

    def decoder_slugs(self) -> List[str]:
        """Representations whose decoder the ``train`` rule makes (autoencoders train their own)."""
        return [slug for slug in self.catalog.slugs if self.catalog[slug].variant != "ae"]

    def stored_slugs(self, store: str, gpu: Optional[bool] = None) -> List[str]:
        """Representations whose ``features.store`` is ``store`` (cache or recompute), optionally
        only those computed on a GPU (True) or the CPU (False)."""
        return [s for s in self.catalog.slugs
                if self.catalog.feature_store(s) == store and (gpu is None or self.catalog[s].uses_gpu == gpu)]

    # -- analyses (paper §4, §5.3-5.5) and the baseline --------------------------------------

    def perturbation_slugs(self) -> List[str]:
        """§5.4: the configured layers (all AlexNet layers when unset) and their autoencoders."""
        layers = self.config["analyses"]["perturbation"]["layers"]
        layers = (self.catalog.alexnet_layers() if layers is None
                  else self.catalog.configured(layers, "analyses.perturbation.layers"))
        return layers + [f"{l}-ae" for l in layers if f"{l}-ae" in self.catalog]

    def analysis_slugs(self, analysis: str) -> List[str]:
        """The configured layers of ``analyses.<analysis>.layers`` that are representations (none
        when the analysis has ``enabled: false``)."""
        settings = self.config["analyses"][analysis]
        if not settings.get("enabled", True):
            return []
        return self.catalog.configured(settings["layers"], f"analyses.{analysis}.layers")

    def single_unit_slugs(self) -> List[str]:
        """Supplementary Figure 17: AlexNet's vector layers fc6-fc8, and any node of the other
        networks (choosing a vector node is the user's part there)."""
        found = []
        for slug in self.analysis_slugs("single_units"):
            spec = self.catalog[slug]
            alexnet = spec.family == "alexnet"
            if (alexnet and spec.name in ALEXNET_VECTOR_LAYERS) or (spec.uses_gpu and not alexnet):
                found.append(slug)
        return found

    def single_analysis(self, analysis: str, rep: str) -> bool:
        """Whether an analysis that runs on one fixed representation (HOG's brightness, §4) runs:
        ``rep`` is configured and the analysis is enabled."""
        return rep in self.catalog.base_slugs and self.config["analyses"][analysis]["enabled"]

    def mahendran_vedaldi_slugs(self) -> List[str]:
        """Where the optimisation baseline runs beside a decoder of the same representation."""
        return self.catalog.configured(self.config["baselines"]["mahendran_vedaldi"]["representations"],
                                       "baselines.mahendran_vedaldi.representations")

    def mahendran_vedaldi_options(self, slug: str, *drop: str) -> Dict[str, Any]:
        """The optimisation's settings for one representation (``baselines.mahendran_vedaldi`` without
        the keys that are not :class:`preimage.baselines.MVConfig` fields and without ``drop``),
        ``sigma`` resolved from a per-representation mapping."""
        settings = self.config["baselines"]["mahendran_vedaldi"]
        skip = {"representations", "threads", "device", *drop}
        options = {k: v for k, v in settings.items() if k not in skip}
        if "sigma" in options:
            options["sigma"] = per_rep(options["sigma"], self.catalog[slug])
        return options

    def scaling_fractions(self) -> List[str]:
        """``analyses.scaling.fractions`` as the ``{fraction}`` wildcard's values (0.125 → "0.125")."""
        return [f"{f:g}" for f in self.config["analyses"]["scaling"]["fractions"]]

    # -- parameters that name result files ---------------------------------------------------

    def encoder(self, slug: str) -> str:
        """The fine-tuned encoder an autoencoder's training job writes (§5.2)."""
        return f"{self.results}/{slug}/encoder.pt"

    def decoder(self, slug: str) -> str:
        return f"{self.results}/{slug}/decoder.pt"

    def feature_params(self, slug: str) -> Dict[str, Any]:
        """``create`` parameters of one representation: only its own family's keys, so that a
        HOG parameter reruns HOG's cache and nothing else. An autoencoder's network is its
        fine-tuned encoder (:meth:`encoder`)."""
        params = dict(self.catalog[slug].params)
        if self.catalog[slug].variant == "ae":
            params["weights"] = self.encoder(slug)
        return params

    def options(self, slug: str) -> Dict[str, Any]:
        """(name, parameters) that recreate a representation inside an analysis job."""
        return {"name": self.catalog[slug].name, "params": self.feature_params(slug)}

    def encoder_inputs(self, slugs: Iterable[str]) -> List[str]:
        """The fine-tuned encoders the autoencoders among ``slugs`` compute their features with."""
        return [self.encoder(slug) for slug in slugs if self.catalog[slug].variant == "ae"]

    def loss_params(self, slug: str) -> Dict[str, Any]:
        """What :func:`preimage.train.train_decoder` takes as ``loss``: the kind, and for the
        feature-space losses the representation to compute features with and ``decoder.gan``."""
        kind = self.catalog.loss(slug)
        if kind == "pixel":
            return {"kind": "pixel"}
        return {"kind": kind, "representation": self.options(slug),
                "gan": dict(self.config["decoder"].get("gan", {})) if kind == "gan" else {}}

    def init_decoder(self, slug: str) -> List[str]:
        """``[decoder.pt]`` of the pixel decoder a ``-feature`` / ``-gan`` variant starts from
        (``decoder.init: pixel``, :meth:`Catalog.starts_from`), else ``[]``."""
        start = self.catalog.starts_from(slug)
        return [] if start is None else [self.decoder(start)]

    def feature_error_options(self, slug: str) -> Optional[Dict[str, Any]]:
        """The representation (name, parameters) the evaluation recomputes features with, for the
        feature error of a decoder compared under Appendix A (:meth:`Catalog.has_feature_error`);
        else None."""
        return self.options(slug) if self.catalog.has_feature_error(slug) else None

    # -- targets ---------------------------------------------------------------------------

    def all_targets(self) -> List[str]:
        """Every file the ``all`` rule asks for."""
        R, cat = self.results, self.catalog
        targets = [f"{R}/data/train.h5", f"{R}/data/test.h5"]
        targets += [f"{R}/features/{rep}/{split}.h5" for rep in cat.feature_slugs(True) + cat.feature_slugs(False)
                    for split in ("train", "test")]
        targets += [f"{R}/{rep}/{file}" for rep in cat.slugs for file in ("error.csv", "reconstructions.png")]
        if not cat.slugs:
            return targets
        targets += [f"{R}/tables/errors.csv", f"{R}/tables/errors.md"]
        if cat.alexnet_layers():
            targets += [f"{R}/figures/error_by_layer.png", f"{R}/figures/reconstructions_alexnet.png"]
        if cat.shallow():
            targets.append(f"{R}/figures/reconstructions_shallow.png")
        targets += [f"{R}/figures/error_by_layer_{family}.png" for family in cat.network_layers()]
        targets += [f"{R}/figures/gan_{slug}.png" for slug in cat.loss_bases()]
        return targets + self.analysis_targets() + self.baseline_targets() + self.scorecard_targets() + [
            f"{R}/findings.md"]

    def scorecard_targets(self) -> List[str]:
        """The scorecard's table and figure (:mod:`preimage.scorecard`) when ``analyses.scorecard``
        is enabled."""
        if not self.config["analyses"]["scorecard"]["enabled"] or not self.catalog.slugs:
            return []
        R = self.results
        return [f"{R}/tables/scorecard.csv", f"{R}/tables/scorecard.md", f"{R}/figures/scorecard.png"]

    def scorecard_slugs(self) -> List[str]:
        """The representations that get a scorecard job: every one except the Appendix A loss
        variants, whose decoders are methods of their base representation's rows."""
        return [slug for slug in self.catalog.slugs if self.catalog[slug].variant not in LOSS_VARIANTS]

    def scorecard_decoders(self, slug: str) -> Dict[str, str]:
        """Method → slug of each decoder that reconstructs ``slug``'s features
        (:data:`SCORECARD_DECODERS` that are configured)."""
        return {method: f"{slug}{suffix}" for method, suffix in SCORECARD_DECODERS.items()
                if f"{slug}{suffix}" in self.catalog}

    def scorecard_inputs(self, slug: str) -> Dict[str, Any]:
        """The files the scorecard job of ``slug`` reads: the test and training images (originals,
        nearest neighbours), each of its decoders' (:meth:`scorecard_decoders`) reconstructions and
        error table in the same order (which also hold the neighbours, the mean image and the
        timings), Mahendran & Vedaldi's pre-images and table where that baseline ran for it, an
        autoencoder's encoder."""
        R = self.results
        slugs = list(self.scorecard_decoders(slug).values())
        inputs: Dict[str, Any] = {
            "test_images": f"{R}/data/test.h5", "train_images": f"{R}/data/train.h5",
            "reconstructions": [f"{R}/{s}/reconstructions.h5" for s in slugs],
            "errors": [f"{R}/{s}/error.csv" for s in slugs]}
        if slug in self.mahendran_vedaldi_slugs():
            inputs.update(mv_images=f"{R}/{slug}/mahendran_vedaldi.h5", mv_table=f"{R}/{slug}/mahendran_vedaldi.csv")
        encoders = self.encoder_inputs([slug])
        if encoders:
            inputs["encoder"] = encoders
        return inputs

    def analysis_targets(self) -> List[str]:
        R = self.results
        targets = []
        perturbed = self.perturbation_slugs()
        for slug in perturbed:
            targets += [f"{R}/{slug}/analysis/perturbation.csv", f"{R}/figures/perturbation_{slug}.png"]
        if perturbed:
            targets.append(f"{R}/tables/perturbation.csv")
        interpolated = self.analysis_slugs("interpolation")
        targets += [f"{R}/figures/interpolation_{slug}.png" for slug in interpolated]
        if interpolated:
            targets.append(f"{R}/figures/interpolation.png")
        for slug in self.analysis_slugs("random_samples"):
            targets += [f"{R}/{slug}/analysis/random_samples.csv", f"{R}/figures/random_samples_{slug}.png"]
        targets += [f"{R}/figures/single_units_{slug}.png" for slug in self.single_unit_slugs()]
        for analysis in ("dark_knowledge", "hue_shift"):
            for slug in self.analysis_slugs(analysis):
                targets += [f"{R}/{slug}/analysis/{analysis}.csv", f"{R}/figures/{analysis}_{slug}.png"]
        if self.single_analysis("brightness", "hog"):
            targets += [f"{R}/hog/analysis/brightness.csv", f"{R}/figures/brightness.png"]
        local = self.analysis_slugs("locality")
        for slug in local:
            targets += [f"{R}/{slug}/analysis/locality.csv", f"{R}/figures/locality_{slug}.png"]
        if local:
            targets.append(f"{R}/tables/locality.csv")
        if self.analysis_slugs("scaling"):
            targets += [f"{R}/tables/scaling.csv", f"{R}/tables/scaling.md", f"{R}/figures/scaling.png"]
        return targets

    def baseline_targets(self) -> List[str]:
        R = self.results
        slugs = self.mahendran_vedaldi_slugs()
        targets = []
        for slug in slugs:
            targets += [f"{R}/{slug}/mahendran_vedaldi.csv", f"{R}/figures/mahendran_vedaldi_{slug}.png"]
            if self.config["baselines"]["mahendran_vedaldi"]["restarts"] > 1:
                targets.append(f"{R}/figures/mahendran_vedaldi_samples_{slug}.png")
        if slugs:
            targets += [f"{R}/tables/mahendran_vedaldi.csv", f"{R}/tables/mahendran_vedaldi.md"]
        return targets

    def findings_inputs(self) -> Dict[str, Any]:
        """The tables findings.md is written from (those the config produces)."""
        R = self.results
        inputs: Dict[str, Any] = {"errors": f"{R}/tables/errors.csv"}
        optional = {
            "perturbation": (f"{R}/tables/perturbation.csv", self.perturbation_slugs()),
            "mahendran_vedaldi": (f"{R}/tables/mahendran_vedaldi.csv", self.mahendran_vedaldi_slugs()),
            "brightness": (f"{R}/hog/analysis/brightness.csv", self.single_analysis("brightness", "hog")),
            "scaling": (f"{R}/tables/scaling_fit.csv", self.analysis_slugs("scaling")),
            "scorecard": (f"{R}/tables/scorecard.csv", self.scorecard_targets()),
        }
        inputs.update({k: path for k, (path, wanted) in optional.items() if wanted})
        for analysis in ("dark_knowledge", "hue_shift"):
            slugs = self.analysis_slugs(analysis)
            if slugs:
                inputs[analysis] = [f"{R}/{rep}/analysis/{analysis}.csv" for rep in slugs]
        return inputs

    def reconstruction_group(self, group: str) -> List[str]:
        """The representations of paper Figure 3 (``shallow``) or Figure 5 (AlexNet layers)."""
        return self.catalog.shallow() if group == "shallow" else self.catalog.alexnet_layers()

    def loss_comparison_inputs(self, rep: str) -> Dict[str, Any]:
        """Figures 12-13 for one representation: its -gan / -feature variants and its own decoder, and
        Mahendran & Vedaldi's pre-images where that baseline ran for it."""
        R = self.results
        family = self.catalog.loss_family(rep)
        inputs: Dict[str, Any] = {"test_images": f"{R}/data/test.h5",
                                  "reconstructions": [f"{R}/{s}/reconstructions.h5" for s in family],
                                  "errors": [f"{R}/{s}/error.csv" for s in family]}
        if rep in self.mahendran_vedaldi_slugs():
            inputs.update(mv_images=f"{R}/{rep}/mahendran_vedaldi.h5", mv_table=f"{R}/{rep}/mahendran_vedaldi.csv")
        return inputs

    def scaling_decoder(self, rep: str, fraction: str) -> str:
        """The decoder a point of the data-scaling curve scores: the representation's own at 1."""
        return self.decoder(rep) if fraction == "1" else f"{self.results}/{rep}/scaling/{fraction}/decoder.pt"

    def scaling_error_files(self) -> Dict[str, List[str]]:
        """Representation → the per-image error CSVs of its data-scaling curve (subsets, then all)."""
        return {rep: [f"{self.results}/{rep}/scaling/{f}/errors.csv" for f in self.scaling_fractions() + ["1"]]
                for rep in self.analysis_slugs("scaling")}

    def scaling_references(self) -> Dict[str, str]:
        """Representation → its error.csv (the mean-image line of the scaling figure)."""
        return {rep: f"{self.results}/{rep}/error.csv" for rep in self.analysis_slugs("scaling")}
