// SPDX-License-Identifier: Apache-2.0
#pragma once

// The umbrella header: the core of tstitch (target tstitch::tstitch: schedules, solvers,
// stitching, planning, sample()), which needs nothing but C++20. The components with
// dependencies have headers of their own, so that including this one never requires them:
//   tstitch/models/dit/cpu_model.hpp   the CPU DiT (tstitch::dit: Eigen, oneDNN, nlohmann-json)
//   tstitch/io/*.hpp, tstitch/diffusers/*.hpp   file readers and writers (tstitch::io)
//   tstitch/metrics/*.hpp              sample-quality scores (tstitch::metrics)
//   tstitch/cuda/*.hpp                 the CUDA backend and DiT (tstitch::cuda, tstitch::cuda_dit)

#include "tstitch/core/config.hpp"
#include "tstitch/core/cpu_isa.hpp"
#include "tstitch/core/denoiser.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/core/host_backend.hpp"
#include "tstitch/core/log.hpp"
#include "tstitch/core/philox.hpp"
#include "tstitch/core/prediction.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/core/tensor.hpp"

#include "tstitch/schedule/any_schedule.hpp"
#include "tstitch/schedule/continuous.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/schedule/edm.hpp"
#include "tstitch/schedule/flow.hpp"
#include "tstitch/schedule/inverse.hpp"
#include "tstitch/schedule/lcm.hpp"
#include "tstitch/schedule/sigma_rules.hpp"
#include "tstitch/schedule/trajectory.hpp"

#include "tstitch/solver/any_solver.hpp"
#include "tstitch/solver/clip.hpp"
#include "tstitch/solver/cm_stochastic_iterative.hpp"
#include "tstitch/solver/concept.hpp"
#include "tstitch/solver/ddim.hpp"
#include "tstitch/solver/ddpm.hpp"
#include "tstitch/solver/deis.hpp"
#include "tstitch/solver/dpm_solver.hpp"
#include "tstitch/solver/dpm_solver_singlestep.hpp"
#include "tstitch/solver/dpmpp_2s_ancestral.hpp"
#include "tstitch/solver/euler.hpp"
#include "tstitch/solver/euler_ancestral.hpp"
#include "tstitch/solver/heun.hpp"
#include "tstitch/solver/ipndm.hpp"
#include "tstitch/solver/kdpm2.hpp"
#include "tstitch/solver/lcm.hpp"
#include "tstitch/solver/lms.hpp"
#include "tstitch/solver/multistep.hpp"
#include "tstitch/solver/pndm.hpp"
#include "tstitch/solver/posterior.hpp"
#include "tstitch/solver/tcd.hpp"
#include "tstitch/solver/unipc.hpp"

#include "tstitch/stitch/denoiser_ref.hpp"
#include "tstitch/stitch/policy.hpp"
#include "tstitch/stitch/route.hpp"
#include "tstitch/stitch/row_policy.hpp"
#include "tstitch/stitch/row_stitcher.hpp"
#include "tstitch/stitch/stitcher.hpp"

#include "tstitch/plan/deadline.hpp"
#include "tstitch/plan/measure.hpp"
#include "tstitch/plan/planner.hpp"
#include "tstitch/plan/quality_table.hpp"
#include "tstitch/sample.hpp"
