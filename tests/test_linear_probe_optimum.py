"""The linear probe reaches the optimum of a problem whose optimum is known, and is no worse
than the standard reference (scikit-learn's LogisticRegression on standardised features, C
chosen by cross-validation on the training data)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from audioembed.metrics import accuracy
from audioembed.probes import ProbeConfig, train_utterance_probe
from audioembed.tasks import TaskKind

import torch


def _problem(seed: int, n_train: int, n_test: int, classes: int = 8, dim: int = 24):
    """Gaussian classes with a shared, ill-conditioned covariance (x = A z, z ~ N(mu_c, I)).

    The Bayes rule is known: with equal priors and means of equal norm it is
    argmax_c mu_c . (A^-1 x), so its accuracy on the test items is the optimum any
    classifier can reach on them. A mixes dimensions with condition number ~300, so the best
    linear classifier needs large weights along low-variance directions.
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, dim))
    means *= 1.6 / np.linalg.norm(means, axis=1, keepdims=True)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    mix = q @ np.diag(np.logspace(0, 2.5, dim)) @ q.T

    def draw(n):
        y = rng.integers(0, classes, size=n)
        z = means[y] + rng.normal(size=(n, dim))
        return (z @ mix.T).astype(np.float32), y

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    bayes = (np.linalg.solve(mix, x_test.T).T @ means.T).argmax(1)
    return x_train, y_train, x_test, y_test, float((bayes == y_test).mean())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1])
def test_linear_probe_reaches_known_optimum_and_the_sklearn_reference(seed):
    x_train, y_train, x_test, y_test, optimum = _problem(seed, n_train=4000, n_test=4000)
    n_dev = 800
    x_fit, y_fit, x_dev, y_dev = x_train[:-n_dev], y_train[:-n_dev], x_train[-n_dev:], y_train[-n_dev:]

    def dev_score(outputs):
        return accuracy(y_dev, outputs.argmax(-1))

    model, _ = train_utterance_probe(TaskKind.CLASSIFICATION, [0], x_fit[:, None], y_fit, x_dev[:, None], dev_score,
                                     8, ProbeConfig(probe="linear"), seed, y_dev=y_dev)
    with torch.no_grad():
        probe = accuracy(y_test, model(torch.from_numpy(x_test[:, None])).numpy().argmax(-1))
    reference = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-3, 3, 13), cv=5, max_iter=5000))
    reference.fit(x_train, y_train)
    ref = accuracy(y_test, reference.predict(x_test))
    # 4000 test items: the standard error of an accuracy near 0.55 is about 0.008; with 3200
    # training rows the estimated classifier stays within ~0.025 of the Bayes rule (Adam with
    # early stopping, the probe before this test, stayed 0.1 below it)
    assert probe >= optimum - 0.03, (probe, optimum)
    assert probe >= ref - 0.015, (probe, ref)


@pytest.mark.slow
def test_small_set_chooses_weight_decay_by_cross_validation_and_matches_the_reference():
    """400 training rows (cross-validated weight decay): still no worse than the reference."""
    x_train, y_train, x_test, y_test, optimum = _problem(3, n_train=400, n_test=4000, classes=4, dim=12)
    n_dev = 80
    x_fit, y_fit, x_dev, y_dev = x_train[:-n_dev], y_train[:-n_dev], x_train[-n_dev:], y_train[-n_dev:]
    calls = []

    def dev_score(outputs):
        calls.append(1)
        return accuracy(y_dev, outputs.argmax(-1))

    model, _ = train_utterance_probe(TaskKind.CLASSIFICATION, [0], x_fit[:, None], y_fit, x_dev[:, None], dev_score,
                                     4, ProbeConfig(probe="linear"), 0, y_dev=y_dev)
    assert not calls  # the decay came from cross-validation, not from the one dev part
    assert model.selected_weight_decay in ProbeConfig().weight_decays
    with torch.no_grad():
        probe = accuracy(y_test, model(torch.from_numpy(x_test[:, None])).numpy().argmax(-1))
    reference = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-3, 3, 13), cv=5, max_iter=5000))
    reference.fit(x_train, y_train)
    ref = accuracy(y_test, reference.predict(x_test))
    assert probe >= ref - 0.015, (probe, ref)
    assert probe >= optimum - 0.05, (probe, optimum)


def test_few_shot_probe_learns_from_its_shots_only():
    """A K-shot probe must not train on the dev part: here the dev labels are swapped, so a
    probe refitted on train + dev (what the full-set protocol does) inverts its predictions,
    while the few-shot probe follows its 2 shots per class."""
    from audioembed.probe_runner import EncodedTargets, fit_and_score
    from audioembed.tasks import Task

    class Accuracy(Task):
        def metrics(self, targets, predictions, scores, labels):
            return {"accuracy": accuracy(np.asarray(targets), np.asarray(predictions))}

    rng = np.random.default_rng(0)
    centres = np.array([[3.0, 0.0], [-3.0, 0.0]])
    y_train, y_dev, y_test = np.array([0, 0, 1, 1]), rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    x = np.concatenate([centres[y] + rng.normal(scale=0.5, size=(len(y), 2)) for y in (y_train, y_dev, y_test)])
    labels = np.concatenate([y_train, 1 - y_dev, y_test])  # dev labels swapped
    feats = [row[None, None, :].astype(np.float32) for row in x]  # (L=1, rows=1, D)
    task = Accuracy()
    encoded = EncodedTargets(TaskKind.CLASSIFICATION, [str(v) for v in labels], ["0", "1"])
    train, dev, test = range(0, 4), range(4, 204), range(204, 404)
    few = fit_and_score(task, encoded, feats, [0], list(train), list(dev), list(test), ProbeConfig(), 0, few_shot=True)
    full = fit_and_score(task, encoded, feats, [0], list(train), list(dev), list(test), ProbeConfig(), 0)
    assert few.metrics["accuracy"] > 0.95
    assert full.metrics["accuracy"] < 0.5  # the full-set protocol does learn from dev: it must not be used for K shots

    # which fits another seed could change: the seeded cross-validation parts only (404 rows <= cv_max_rows)
    assert not few.seed_dependent and full.seed_dependent
    no_cv = fit_and_score(task, encoded, feats, [0], list(train), list(dev), list(test), ProbeConfig(cv_max_rows=0), 0)
    assert not no_cv.seed_dependent
    again = fit_and_score(task, encoded, feats, [0], list(train), list(dev), list(test), ProbeConfig(cv_max_rows=0), 7)
    assert again.metrics == no_cv.metrics and again.predictions == no_cv.predictions
