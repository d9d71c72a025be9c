"""The data layer: nuScenes/Occ3D info files (`prepare`), the torch dataset (`dataset`) and the
image/BEV transforms shared with the predictor (`transforms`). Submodules are imported explicitly."""
