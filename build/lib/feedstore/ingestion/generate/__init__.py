"""Stage: synthetic feed events, fast and reproducible.

How it is built (vectorized throughout, no per-event Python):

* A `World` holds users and items and their latent traits, drawn once from the seed.
* Events are produced per *(day, block)* with a random stream seeded by ``(seed, day, block)``. Days never share
  random state, so the output does not depend on how many workers run or in which order; a day with more
  than ``block_events`` events is cut into blocks of that size (a documented part of the data's identity).
* Within a block: feed *requests* (1+ impressions sharing user, device and timestamp) get an hour from the
  diurnal curve; the user is drawn by activity weight among users who signed up *before* the request; each
  impression's category comes from the user's (drifting) preferences; the item is drawn by
  popularity x quality x lifecycle among items of that category published *before* the request; engagement
  follows a logistic model whose intercept is calibrated to ``target_ctr``.
"""
