"""Recipe.override: the one way to change a recipe's fields (get_recipe and a resumed run's
--iters/--set)."""

import pytest

from resnet_explorer.errors import RecipeError
from resnet_explorer.recipes import RECIPES, get_recipe


def test_override_scales_the_schedule_then_sets_fields():
    paper = RECIPES["cifar-paper"]
    short = paper.override(iters=6400)
    assert (short.max_iters, short.milestones, short.eval_every) == (6400, [3200, 4800], 1000)
    assert short == get_recipe("cifar-paper", iters=6400)
    assert paper.max_iters == 64_000 and paper.milestones == [32_000, 48_000]  # the original is left alone
    mine = paper.override(iters=100, milestones=[10], lr=0.2, name="mine")
    assert (mine.max_iters, mine.milestones, mine.lr, mine.name, mine.momentum) == (100, [10], 0.2, "mine", 0.9)
    assert paper.override() == paper and paper.override(iters=None) == paper


@pytest.mark.parametrize("changes,fragment", [
    ({"bogus": 1, "lrr": 2}, "recipe has no field(s) bogus, lrr: use augment, batch_size"),
    ({"lr": -1.0}, "lr=-1.0 is invalid"),
    ({"iters": 0}, "iters=0 is invalid"),
    ({"iters": "10"}, "iters='10' is invalid"),
    ({"milestones": "32000"}, "milestones='32000' is invalid"),
])
def test_override_refuses_what_is_not_a_recipe_in_one_line(changes, fragment):
    with pytest.raises(RecipeError) as e:
        RECIPES["test"].override(**changes)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(RecipeError, match="unknown recipe 'fast'"):
        get_recipe("fast")
