# Stage 6: figures drawn from finished results (paper Figures 3, 5, 7, 10). Their settings
# (evaluate.n_show) rerun only these jobs.


rule reconstructions_png:
    conda:
        ENVIRONMENT
    input:
        test_images=f"{R}/data/test.h5",
        reconstructions=f"{R}/{{rep}}/reconstructions.h5",
    output:
        report(
            f"{R}/{{rep}}/reconstructions.png",
            caption="../workflow/report/reconstructions.rst",
            category="Reconstructions",
            subcategory="{rep}",
        ),
    params:
        n_show=config["evaluate"]["n_show"],
    log:
        f"{R}/logs/figures/reconstructions_{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/figures/{{rep}}/reconstructions.tsv"
    script:
        "../workflow/scripts/figures_reconstructions.py"


rule reconstructions_figure:
    conda:
        ENVIRONMENT
    input:
        test_images=f"{R}/data/test.h5",
        reconstructions=lambda wc: expand(f"{R}/{{rep}}/reconstructions.h5", rep=PLAN.reconstruction_group(wc.group)),
    output:
        report(
            f"{R}/figures/reconstructions_{{group}}.png",
            caption="../workflow/report/reconstructions_group.rst",
            category="Reconstructions",
        ),
    wildcard_constraints:
        group="shallow|alexnet",
    params:
        n_show=config["evaluate"]["n_show"],
        representations=lambda wc: PLAN.reconstruction_group(wc.group),
    log:
        f"{R}/logs/figures/reconstructions_{{group}}.log",
    benchmark:
        f"{R}/benchmarks/figures/reconstructions_{{group}}.tsv"
    script:
        "../workflow/scripts/figures_reconstructions_group.py"


rule error_by_layer:
    conda:
        ENVIRONMENT
    input:
        table=f"{R}/tables/errors.csv",
        perturbation=[f"{R}/tables/perturbation.csv"] if PLAN.perturbation_slugs() else [],
    output:
        report(f"{R}/figures/error_by_layer.png", caption="../workflow/report/error_by_layer.rst", category="Errors"),
    log:
        f"{R}/logs/figures/error_by_layer.log",
    benchmark:
        f"{R}/benchmarks/figures/error_by_layer.tsv"
    script:
        "../workflow/scripts/figures_error_by_layer.py"


rule error_by_network_layer:
    """Figure 7's curve for another network (EfficientNet-Lite0 in the default): its nodes from
    shallow to deep, trained and untrained."""
    conda:
        ENVIRONMENT
    input:
        table=f"{R}/tables/errors.csv",
        perturbation=[f"{R}/tables/perturbation.csv"] if PLAN.perturbation_slugs() else [],
    output:
        report(
            f"{R}/figures/error_by_layer_{{family}}.png",
            caption="../workflow/report/error_by_layer.rst",
            category="Errors",
        ),
    wildcard_constraints:
        family=alternation(CATALOG.network_layers()),
    params:
        layers=lambda wc: CATALOG.network_layers()[wc.family],
    log:
        f"{R}/logs/figures/error_by_layer_{{family}}.log",
    benchmark:
        f"{R}/benchmarks/figures/error_by_layer_{{family}}.tsv"
    script:
        "../workflow/scripts/figures_error_by_layer.py"


rule interpolation_overview:
    conda:
        ENVIRONMENT
    input:
        expand(f"{R}/{{rep}}/analysis/interpolation.h5", rep=PLAN.analysis_slugs("interpolation")),
    output:
        report(
            f"{R}/figures/interpolation.png",
            caption="../workflow/report/interpolation.rst",
            category="Analyses",
            subcategory="Interpolation",
        ),
    params:
        representations=PLAN.analysis_slugs("interpolation"),
    log:
        f"{R}/logs/figures/interpolation.log",
    benchmark:
        f"{R}/benchmarks/figures/interpolation.tsv"
    script:
        "../workflow/scripts/figures_interpolation.py"


rule loss_comparison:
    """Appendix A, Figures 12-13: input, GAN variant, feature-loss variant, simple decoder, M&V."""
    conda:
        ENVIRONMENT
    input:
        unpack(loss_comparison_inputs),
    output:
        report(
            f"{R}/figures/gan_{{rep}}.png",
            caption="../workflow/report/loss_comparison.rst",
            category="Reconstructions",
            subcategory="Appendix A",
        ),
    wildcard_constraints:
        rep=alternation(CATALOG.loss_bases()),
    params:
        n_show=config["evaluate"]["n_show"],
        labels=lambda wc: [CATALOG[s].display for s in CATALOG.loss_family(wc.rep)],
        name=lambda wc: CATALOG[wc.rep].display,
    log:
        f"{R}/logs/figures/gan_{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/figures/{{rep}}/loss_comparison.tsv"
    script:
        "../workflow/scripts/figures_loss_comparison.py"


rule mahendran_vedaldi_samples:
    """The several pre-images per code of the optimisation (baselines.mahendran_vedaldi.restarts > 1)."""
    conda:
        ENVIRONMENT
    input:
        images=f"{R}/{{rep}}/mahendran_vedaldi.h5",
        csv=f"{R}/{{rep}}/mahendran_vedaldi.csv",
        test_images=f"{R}/data/test.h5",
    output:
        report(
            f"{R}/figures/mahendran_vedaldi_samples_{{rep}}.png",
            caption="../workflow/report/mahendran_vedaldi_samples.rst",
            category="Baselines",
            subcategory="Mahendran & Vedaldi",
        ),
    wildcard_constraints:
        rep=alternation(PLAN.mahendran_vedaldi_slugs()),
    params:
        n_show=config["analyses"]["n_show"],
    log:
        f"{R}/logs/figures/mahendran_vedaldi_samples_{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/figures/{{rep}}/mahendran_vedaldi_samples.tsv"
    script:
        "../workflow/scripts/figures_mahendran_vedaldi_samples.py"
