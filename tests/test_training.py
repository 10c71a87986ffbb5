import pytest
import torch

from unlearnbench import UserError
from unlearnbench.data import load_dataset
from unlearnbench.models import BackboneSpec, build_backbone
from unlearnbench.training import Recipe, accuracy, predict_logits, resolve_recipe, train


def test_recipes_resolve_from_general_to_specific():
    cnn = resolve_recipe("mnist5k", BackboneSpec("resnet18"))
    vit = resolve_recipe("mnist5k", BackboneSpec("vit_tiny"))
    assert cnn.optimizer == "sgd" and vit.optimizer == "adamw"
    assert resolve_recipe("mnist5k", BackboneSpec("vit_tiny"), {"epochs": 3}).epochs == 3
    sections = {"epochs": 3, "mnist5k/vit": {"epochs": 7}, "resnet18": {"lr": 0.5}, "cifar10": {"epochs": 9}}
    assert resolve_recipe("mnist5k", BackboneSpec("vit_tiny"), sections).epochs == 7  # a matching section wins
    sectioned = resolve_recipe("mnist5k", BackboneSpec("resnet18"), sections)
    assert (sectioned.epochs, sectioned.lr) == (3, 0.5)  # fields for every cell; cifar10's section not applied
    with pytest.raises(UserError, match=r"Unknown key 'epoch'.*did you mean 'epochs'"):
        resolve_recipe("mnist5k", BackboneSpec("vit_tiny"), {"epoch": 3})
    with pytest.raises(UserError, match="A recipe's 'optimizer' must be one of sgd, adam, adamw, got 'sdg'"):
        Recipe(optimizer="sdg")


def test_trainer_reaches_85_percent_on_mnist5k_and_is_seeded():
    data = load_dataset("mnist5k")
    spec = BackboneSpec("vgg16", width=0.125)
    recipe = resolve_recipe("mnist5k", spec, {"epochs": 3})
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = train(build_backbone(spec, 10, 1, 28), data, recipe, seed=0, progress=False)
        results.append(predict_logits(model, data, data.test))
    acc = accuracy(results[0], data.test.labels)
    assert acc > 0.85, acc
    assert torch.equal(results[0], results[1])  # same seed, same model


def test_on_epoch_sees_every_epoch_and_evaluating_there_leaves_training_unchanged():
    data = load_dataset("mnist5k")
    spec = BackboneSpec("vgg16", width=0.0625)
    recipe = resolve_recipe("mnist5k", spec, {"epochs": 2})
    seen, modes = [], []

    def on_epoch(epoch, net):
        seen.append((epoch, accuracy(predict_logits(net, data, data.val), data.val.labels)))  # puts net in eval

    outputs = []
    for callback in (None, on_epoch):
        torch.manual_seed(0)
        model = build_backbone(spec, 10, 1, 28)
        model.register_forward_hook(lambda module, args, out: modes.append(module.training))
        train(model, data, recipe, seed=0, progress=False, on_epoch=callback)
        outputs.append(predict_logits(model, data, data.test))
    assert [e for e, _ in seen] == [1, 2]
    assert torch.equal(outputs[0], outputs[1])  # per-epoch evaluation does not perturb training
    steps = 2 * -(-len(data.train) // recipe.batch_size)
    assert sum(modes) == 2 * steps  # every training step ran in training mode, evaluations in eval mode


def test_eval_batches_do_not_change_logits():
    data = load_dataset("mnist5k")
    torch.manual_seed(0)
    model = build_backbone(BackboneSpec("vgg16", width=0.0625), 10, 1, 28)
    assert torch.allclose(predict_logits(model, data, data.test, batch_size=1000),
                          predict_logits(model, data, data.test), atol=1e-5)


def test_tf32_follows_each_run_s_precision_setting(monkeypatch):
    """`--precision float32` turns cuDNN's and matmul's TF32 kernels off; a later run in the process with the default
    precision gets torch's defaults back (before, they stayed off, under keys of runs that use them)."""
    from unlearnbench.training import PRECISION_VARIABLE, prepare

    class Stays(torch.nn.Linear):  # a model that stays on the CPU: no GPU needed to set the flags
        def to(self, *args, **kwargs):
            return self

    cuda = torch.device("cuda")
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        monkeypatch.setenv(PRECISION_VARIABLE, "float32")
        prepare(Stays(2, 2), cuda)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
        monkeypatch.setenv(PRECISION_VARIABLE, "auto")
        prepare(Stays(2, 2), cuda)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
