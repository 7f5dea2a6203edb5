# The scorecard (beyond the paper): every inversion method of a representation on the same test images,
# scored by pixel error and by whether a trained classifier still recognises the reconstruction.
SCORECARD = ANALYSES["scorecard"]


rule scorecard_scores:
    conda:
        ENVIRONMENT
    input:
        unpack(lambda wc: PLAN.scorecard_inputs(wc.rep)),
    output:
        f"{R}/{{rep}}/scorecard.csv",
    wildcard_constraints:
        rep=alternation(PLAN.scorecard_slugs()),
    params:
        representation=lambda wc: CATALOG[wc.rep].display,
        options=lambda wc: PLAN.options(wc.rep),
        methods=lambda wc: list(PLAN.scorecard_decoders(wc.rep)),
        classifier={
            "name": SCORECARD["classifier"],
            "params": {"weights": SCORECARD["weights"], "crop": SCORECARD["crop"]},
        },
        batch_size=SCORECARD["batch_size"],
        device=ANALYSES["device"],
        seed=ANALYSES["seed"],
    threads: ANALYSES["threads"]
    resources:
        mem_mb=4000,
        runtime=scaled_runtime(60),
        gpu=1,
    log:
        f"{R}/logs/scorecard/{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/scorecard/{{rep}}.tsv"
    script:
        "../workflow/scripts/scorecard_scores.py"


rule scorecard_table:
    conda:
        ENVIRONMENT
    input:
        expand(f"{R}/{{rep}}/scorecard.csv", rep=PLAN.scorecard_slugs()),
    output:
        csv=report(f"{R}/tables/scorecard.csv", caption="../workflow/report/scorecard_table.rst", category="Scorecard"),
        md=f"{R}/tables/scorecard.md",
        figure=report(f"{R}/figures/scorecard.png", caption="../workflow/report/scorecard.rst", category="Scorecard"),
    log:
        f"{R}/logs/tables/scorecard.log",
    benchmark:
        f"{R}/benchmarks/tables/scorecard.tsv"
    script:
        "../workflow/scripts/scorecard_table.py"
