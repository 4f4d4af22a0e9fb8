"""Raw files and what they say: reading (LibRaw and bare mosaics), metadata, the colour filter
array's packing, DNG writing, image files and side-by-side pictures.

The bottom layer: it imports only the leaves (``darkraw.errors``, ``darkraw.choices``).
"""
