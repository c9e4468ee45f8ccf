import lightning as L
import torch

from cellsmith._logging import seed_everything
from cellsmith.nn import load_best_weights, make_trainer, mlp, torch_threads


class _Regression(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = mlp(3, [8], 1)

    def _loss(self, batch):
        x, y = batch
        return ((self.net(x) - y) ** 2).mean()

    def training_step(self, batch, _):
        return self._loss(batch)

    def validation_step(self, batch, _):
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


def test_torch_threads_restores_the_setting():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_trainer_checkpoints_and_best_weights(tmp_path):
    seed_everything(0)
    x = torch.randn(64, 3)
    data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    model = _Regression()
    trainer = make_trainer(tmp_path, max_epochs=4, patience=0, progress_bar=False)
    trainer.fit(model, loader, loader)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "logs" / "metrics.csv").is_file()
    best_score = float(trainer.checkpoint_callback.best_model_score)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    assert load_best_weights(trainer, model)
    with torch.no_grad():
        reloaded = float(model._loss((x, x.sum(1, keepdim=True))))
    assert abs(reloaded - best_score) < 1e-5
