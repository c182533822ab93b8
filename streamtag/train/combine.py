"""Networks made of trained networks: what snapshot averaging and per-tag early stopping export.

Both give logits, like every zoo network, so ``streamtag.model.modelfile.save`` writes them as one
TorchScript model file whose output is their probabilities.

- ``MeanOfProbabilities(members)``: the logit of the mean of the members' probabilities, so the
  model file's output is exactly that mean (snapshot averaging; CP-JKU, MediaEval 2019).
- ``PerTagSelect(members, member_of_tag)``: tag ``j`` is answered by member
  ``member_of_tag[j]`` (per-tag early stopping; AMLAG, MediaEval 2019: each member is the
  weights of the epoch that was best on the validation loss of its tags).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MeanOfProbabilities", "PerTagSelect"]

class MeanOfProbabilities(nn.Module):
    """Logits whose sigmoid is the mean of the members' sigmoid probabilities."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("MeanOfProbabilities needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        probabilities: list[Tensor] = []
        for member in self.members:
            probabilities.append(torch.sigmoid(member(x).double()))
        mean = torch.stack(probabilities, 0).mean(0)
        # Kept 1e-7 from 0 and 1 so that the logit is finite; sigmoid(logit(p)) then equals p
        # within float32 rounding.
        return torch.logit(mean, eps=1e-7).float()


class PerTagSelect(nn.Module):
    """Logits where column ``j`` comes from member ``member_of_tag[j]``."""

    def __init__(self, members: Sequence[nn.Module], member_of_tag: Sequence[int]) -> None:
        super().__init__()
        if not members:
            raise ValueError("PerTagSelect needs at least one member")
        if any(not 0 <= k < len(members) for k in member_of_tag):
            raise ValueError(f"member_of_tag {list(member_of_tag)} names a member outside "
                             f"0..{len(members) - 1}")
        self.members = nn.ModuleList(members)
        self.register_buffer("member_of_tag",
                             torch.tensor(list(member_of_tag), dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        outputs: list[Tensor] = []
        for member in self.members:
            outputs.append(member(x))
        stacked = torch.stack(outputs, 0)  # (members, batch, tags)
        index = self.member_of_tag.view(1, 1, -1).expand(1, stacked.shape[1], -1)
        return stacked.gather(0, index).squeeze(0)
