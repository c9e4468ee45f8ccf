"""Pure-torch re-implementations of published models, loadable from their own checkpoints.

Each model here is a plain ``torch.nn.Module`` (tensors in, tensors out, no AnnData) whose
state dict matches the original code's, so that published weights load without the original
package. Workflows (retrieval, perturbation) wrap them.
"""
