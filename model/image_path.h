// image_path.h: the image side of KOSMOS as forward/backward pairs: the CLIP ViT tower (frozen layers run
// forward only), and the connector that turns its features into `num_latents` decoder-width vectors per image:
// flamingo-pytorch's PerceiverResampler + image_proj, or Kosmos-2's XConnector.
#pragma once

#include <vector>

#include "model/layers.h"

namespace kosmos::model {

// Randomness of the image path for one micro-batch (the XConnector's attention dropout).
struct ImagePathKeys {
  DropoutSite connector_attention;
};

struct VisionSaved {
  std::vector<BlockSaved> trainable_layers;  // the last trainable_layers encoder layers, in order
  TensorView encoded;                         // [Ni*P, dv] output of the last layer
  TensorView post_ln, feature;                // [Ni*P, dv] post LayerNorm, L2-normalised feature
  LayerNorm::Saved post_ln_stats;
  TensorView feature_norm;                    // [Ni*P] f32
};

struct ConnectorSaved {
  int64_t images = 0;           // of this micro-batch (several micro-batches' states can be alive in a pipeline)
  // Resampler (per layer) and XConnector share these names where they can.
  struct Layer {
    TensorView x_normed, latents_in, latents_normed, q, kv_in, kv, attention, lse, latents_mid, ff_in, ff_hidden,
        ff_activated;
    LayerNorm::Saved ln_media, ln_latents, ln_ff;
  };
  TensorView feature;           // [Ni*P, dv] the vision feature the connector read
  TensorView media;             // [Ni*P, dv] features + media position (resampler) or dense(features) (XConnector)
  std::vector<Layer> layers;
  TensorView latents_out;       // [Ni*nl, dv] before the final norm
  TensorView normed;            // [Ni*nl, dv] after the final norm (the image_proj input)
  LayerNorm::Saved ln_out;
  TensorView query_in;          // XConnector: latent queries repeated per image [Ni*nl, d]
};

class ImagePath {
 public:
  ImagePath(const KosmosConfig & config, const ModelState & state);

  // images [Ni, C, H, W] f32 -> image_embeddings [Ni*nl, d] f32.
  void forward(Runtime & rt, TensorView image_embeddings, TensorView images, const ImagePathKeys & keys,
               VisionSaved & vision, ConnectorSaved & connector, bool keep_for_backward);
  // Accumulates the gradients of the connector and of the trainable vision layers from d_image_embeddings.
  void backward(Runtime & rt, TensorView d_image_embeddings, const ImagePathKeys & keys, const VisionSaved & vision,
                const ConnectorSaved & connector);

 private:
  void vision_forward(Runtime & rt, TensorView images, VisionSaved & saved, bool keep);
  void vision_backward(Runtime & rt, TensorView d_feature, const VisionSaved & saved);
  void resampler_forward(Runtime & rt, TensorView out, TensorView feature, ConnectorSaved & saved);
  TensorView resampler_backward(Runtime & rt, TensorView d_out, const ConnectorSaved & saved);
  void xconnector_forward(Runtime & rt, TensorView out, TensorView feature, const ImagePathKeys & keys,
                          ConnectorSaved & saved);
  TensorView xconnector_backward(Runtime & rt, TensorView d_out, const ImagePathKeys & keys,
                                 const ConnectorSaved & saved);

  const KosmosConfig config_;
  const ModelState & state_;
  int64_t images_ = 0;  // of the micro-batch being run (set by forward and backward from the saved state)
};

}  // namespace kosmos::model
