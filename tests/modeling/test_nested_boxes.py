"""model.box.nested_thresh: a box lying inside a higher-scoring box of its class is dropped after NMS."""
import torch

from poseseg.modeling.box_head import nested_in_higher


def _naive(boxes, labels, thresh):
    out = []
    for i, a in enumerate(boxes.tolist()):
        area = max((a[2] - a[0]) * (a[3] - a[1]), 1e-6)
        hit = False
        for j, b in enumerate(boxes.tolist()[:i]):
            w = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
            h = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
            hit |= labels[i] == labels[j] and w * h / area >= thresh
        out.append(hit)
    return out


def test_nested_in_higher_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(40, 2, generator=g) * 60 + 1], dim=1)
    labels = torch.randint(1, 3, (40,), generator=g)
    for thresh in (0.5, 0.8, 0.95):
        assert nested_in_higher(boxes, labels, thresh).tolist() == _naive(boxes, labels, thresh)


def test_a_part_of_a_person_goes_and_a_neighbour_stays():
    person = [10.0, 10.0, 60.0, 150.0]
    legs = [15.0, 90.0, 55.0, 150.0]  # IoU with the person 0.34: NMS at 0.5 keeps it; 100 % inside it
    neighbour = [50.0, 10.0, 100.0, 150.0]  # overlaps the person by 20 %
    boxes = torch.tensor([person, neighbour, legs])
    assert nested_in_higher(boxes, torch.ones(3, dtype=torch.long), 0.8).tolist() == [False, False, True]
    assert not nested_in_higher(boxes[[2, 0, 1]], torch.ones(3, dtype=torch.long), 0.8).any()  # legs scored first
