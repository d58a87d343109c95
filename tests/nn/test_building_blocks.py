"""The building blocks' fast forms equal the plain computations they replace."""

import pytest
import torch

from sagefm.nn.layers import mean_over_neighbours, project_rows


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_project_rows_equals_linear_in_value_and_weight_gradient(dtype: torch.dtype | None) -> None:
    """`project_rows` gives what ``nn.Linear`` gives, in fp32 and under bf16 autocast: the same
    output dtype and values, and the same float32 weight gradient (to bf16's rounding: the
    product is summed in another order)."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(40, 24, bias=False)
    x = torch.randn(70, 40)
    upstream = torch.randn(70, 24)
    results = []
    for project in (project_rows, lambda layer, rows: layer(rows)):
        linear.weight.grad = None
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = project(linear, x)
        (out.float() * upstream).sum().backward()
        assert linear.weight.grad is not None
        results.append((out, linear.weight.grad.clone()))
    (fast, fast_grad), (plain, plain_grad) = results
    assert fast.dtype == plain.dtype and fast_grad.dtype == torch.float32
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype is None else {"rtol": 2e-2, "atol": 5e-2}
    torch.testing.assert_close(fast.float(), plain.float(), **tolerance)
    torch.testing.assert_close(fast_grad, plain_grad, **tolerance)


def test_project_rows_passes_input_gradients_through_linear() -> None:
    """Inputs that need a gradient (attribution) take the plain linear map."""
    linear = torch.nn.Linear(5, 3, bias=False)
    x = torch.randn(4, 5, requires_grad=True)
    project_rows(linear, x).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, linear.weight.sum(0).expand(4, 5))


def test_mean_over_neighbours_counts_a_repeated_neighbour_twice() -> None:
    """Known answer: a spot listed twice among a row's neighbours weighs twice; a gene no
    neighbour shows reads 0; no neighbours at all gives zeros."""
    values = torch.tensor([[1.0, 0.0], [2.0, 5.0], [4.0, 0.0]])
    visible = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    node_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 2]])
    got = mean_over_neighbours(values, visible, node_index)
    expected = torch.tensor([[(2 + 2 + 4) / 3, 5.0], [(1 + 4 + 4) / 3, 0.0]])
    torch.testing.assert_close(got, expected)
    centred = mean_over_neighbours(values, visible, node_index, centre=torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(centred, expected - torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    alone = mean_over_neighbours(values, visible, node_index[:, :1])
    assert torch.equal(alone, torch.zeros(2, 2))
