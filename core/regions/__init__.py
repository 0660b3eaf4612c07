"""Regions of a canvas and the joint-attention mask of regional prompting (torch only).

A :class:`RegionLayout` splits a canvas of ``width`` x ``height`` pixels into disjoint regions, each
with its own prompt; pixels no region covers form the *background*. Layouts come from a grid
(:func:`grid_layout`), from masks (:func:`layout_from_masks`), from a colour-coded picture
(:func:`layout_from_color_mask`) or from their JSON form (:meth:`RegionLayout.from_json`, the form a
region editor stores in a widget: regions with ``x, y, w, h`` in pixels and a ``prompt``).

The joint attention of a FLUX block runs over ``[text tokens | image tokens]``. With regional
prompting the text is ``[base | region 1 | ... | region R | background]`` and
:func:`joint_attention_mask` says who may attend to whom (``True`` = may attend):

* text of one group sees only its own group's text (``text_r <-> text_s`` blocked for r != s);
* every image token sees the base prompt's text (the base governs every region); the base text
  sees the image only in ``"global"`` mode (see :func:`joint_attention_mask`);
* region r's text and region r's image tokens see each other, and no other image token;
* the background prompt (if any) pairs the same way with the uncovered pixels;
* image <-> image: ``"blocked"`` keeps each region to itself (the reference method),
  ``"global"`` lets every image token see every other (identity can flow between sheet cells);
* extra tokens appended after the image (e.g. reference latents) see and are seen by everything.

Nothing here knows the VAE or the patch size: the image token grid comes in as ``(rows, cols)``;
:func:`token_grid` computes it for a given VAE downscale and patch size.

The package is split by job: ``layout`` (the layout model and its JSON), ``builders`` (making
layouts), ``attention`` (token grid, joint-attention mask, masked attention), ``cells`` (cutting a
finished sheet apart). Import the names from here.
"""

from .attention import *  # noqa: F401,F403
from .builders import *  # noqa: F401,F403
from .cells import *  # noqa: F401,F403
from .layout import *  # noqa: F401,F403
from .layout import BACKGROUND, IMAGE_ATTENTION_MODES, LAYOUT_VERSION  # noqa: F401
