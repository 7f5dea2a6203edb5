"""Snakemake adapter: rule loss_comparison → preimage.figures.loss_comparison (Figures 12-13)."""
from preimage import logs

with logs.job(snakemake):
    from preimage import figures

    inputs = snakemake.input
    decoders = dict(zip(snakemake.params.labels, zip(inputs.reconstructions, inputs.errors)))
    mv = (inputs.mv_images, inputs.mv_table) if "mv_images" in inputs.keys() else None
    figures.loss_comparison(inputs.test_images, decoders, snakemake.output[0], snakemake.params.n_show,
                            mahendran_vedaldi=mv, title=f"{snakemake.params.name}: reconstructions with the losses of "
                                                        "Appendix A (cf. paper Figures 12-13)")
