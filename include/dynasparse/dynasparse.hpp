// SPDX-License-Identifier: Apache-2.0
// Umbrella header: includes every public header.
#pragma once

#include "dynasparse/config.hpp"
#include "dynasparse/error.hpp"
#include "dynasparse/fwd.hpp"
#include "dynasparse/version.hpp"

#include "dynasparse/core/aligned_buffer.hpp"
#include "dynasparse/core/build_info.hpp"
#include "dynasparse/core/dtype.hpp"
#include "dynasparse/core/eigen_interop.hpp"
#include "dynasparse/core/tensor.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/core/workspace.hpp"

#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/attention.hpp"
#include "dynasparse/simd/attention_args.hpp"
#include "dynasparse/simd/dot_int8.hpp"
#include "dynasparse/simd/gemm_int8.hpp"
#include "dynasparse/simd/math.hpp"
#include "dynasparse/simd/quantize.hpp"
#include "dynasparse/simd/reduce.hpp"
#include "dynasparse/simd/softmax.hpp"
#include "dynasparse/simd/spmm_f32.hpp"
#include "dynasparse/simd/spmm_int8.hpp"

#include "dynasparse/io/npy.hpp"
#include "dynasparse/io/safetensors.hpp"

#include "dynasparse/quant/calibrator.hpp"
#include "dynasparse/quant/dense_i8.hpp"
#include "dynasparse/quant/error_report.hpp"
#include "dynasparse/quant/lut.hpp"
#include "dynasparse/quant/observer.hpp"
#include "dynasparse/quant/quant_params.hpp"
#include "dynasparse/quant/quantize.hpp"

#include "dynasparse/sparse/block_csr.hpp"
#include "dynasparse/sparse/block_mask.hpp"
#include "dynasparse/sparse/group_sparse_f32.hpp"
#include "dynasparse/sparse/group_sparse_i8.hpp"

#include "dynasparse/nn/any_linear.hpp"
#include "dynasparse/nn/dense_f32.hpp"
#include "dynasparse/nn/embedding.hpp"
#include "dynasparse/nn/feed_forward.hpp"
#include "dynasparse/nn/gated_attention.hpp"
#include "dynasparse/nn/kv_cache.hpp"
#include "dynasparse/nn/linear.hpp"
#include "dynasparse/nn/norm.hpp"

#include "dynasparse/model/model.hpp"
#include "dynasparse/model/model_config.hpp"
#include "dynasparse/model/sampling.hpp"
#include "dynasparse/model/tokenizer.hpp"

#include "dynasparse/parallel/partitioner.hpp"
#include "dynasparse/parallel/plan.hpp"
