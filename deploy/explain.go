package deploy

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/model"
)

// Explain explains version of name from its registered artifact (the
// champion's when version is 0): its top weights by effect, with the
// readable names retraining kept behind their hashed indices
// (model.Explain). `flywheel models explain` and GET
// /v1/models/{name}/explain both answer with it. It returns an ENOTFOUND
// error for a model without a champion or a version that does not exist,
// and an error wrapping model.ErrCorrupt for a damaged artifact. It is safe
// for concurrent use.
func (r *Registry) Explain(ctx context.Context, name string, version, top int) (*model.Explanation, error) {
	v, err := r.resolve(ctx, name, version)
	if err != nil {
		return nil, err
	}
	x, err := model.Explain(v.Artifact, top)
	if err != nil {
		return nil, fmt.Errorf("explain %s v%d: %w", name, v.Version, err)
	}
	x.Model, x.Version = name, v.Version
	return x, nil
}

// FeatureProfile returns the feature profile version of name was trained
// with (its manifest's feature_profile, checked), or nil for a version
// trained without one (the bootstrap version, or one trained before
// profiles were kept). It returns an ENOTFOUND error for a version that
// does not exist. It is safe for concurrent use.
func (r *Registry) FeatureProfile(ctx context.Context, name string, version int) (*model.FeatureProfile, error) {
	v, err := r.resolve(ctx, name, version)
	if err != nil {
		return nil, err
	}
	var man struct {
		FeatureProfile *model.FeatureProfile `json:"feature_profile"`
	}
	if len(v.Manifest) == 0 || json.Unmarshal(v.Manifest, &man) != nil || man.FeatureProfile == nil {
		return nil, nil // no manifest, or none of retraining's
	}
	if err := man.FeatureProfile.Validate(); err != nil {
		return nil, fmt.Errorf("%s v%d: %w", name, v.Version, err)
	}
	return man.FeatureProfile, nil
}

// resolve returns version of name, the champion when version is 0.
func (r *Registry) resolve(ctx context.Context, name string, version int) (*Version, error) {
	if version == 0 {
		v, err := r.Alias(ctx, name, Champion)
		if err != nil {
			return nil, fmt.Errorf("champion of %s: %w", name, err)
		}
		if v == 0 {
			return nil, flywheel.Errorf(flywheel.ENOTFOUND, "model %s has no champion", name)
		}
		version = v
	}
	return r.Get(ctx, name, version)
}
