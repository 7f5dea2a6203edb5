"""Snakemake adapter: rule scaling_table → preimage.scaling.write_scaling_tables and scaling_curve."""
from preimage import logs

with logs.job(snakemake):
    from preimage.scaling import mean_image_errors, scaling_curve, write_scaling_tables

    curve, fit = write_scaling_tables(snakemake.params.errors, snakemake.output.curve, snakemake.output.fit,
                                      snakemake.output.md, extrapolate_to=snakemake.params.extrapolate_to,
                                      seed=snakemake.params.seed)
    scaling_curve(curve, fit, snakemake.output.figure, mean_image_errors(snakemake.params.references))
