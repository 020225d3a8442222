// SPDX-License-Identifier: Apache-2.0
#pragma once

// The one list of tstitch's solvers: what the command line offers by name, what a diffusers
// scheduler_config.json loads into, and what device sampling accepts. Adding a solver here makes
// it reachable from all three.

#include <array>
#include <string>
#include <string_view>
#include <variant>

#include "tstitch/core/error.hpp"
#include "tstitch/solver/cm_stochastic_iterative.hpp"
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
#include "tstitch/solver/pndm.hpp"
#include "tstitch/solver/tcd.hpp"
#include "tstitch/solver/unipc.hpp"

namespace tstitch {

/// Every solver of tstitch, with its options, as one type.
using AnySolver = std::variant<DDIM, DDPM, Euler, EulerAncestral, Heun, DPMSolverMultistep, UniPC,
                               LCM, KDPM2, KDPM2Ancestral, LMS, DEIS, PNDM, IPNDM, TCD,
                               CMStochasticIterative, DPMSolverSinglestep, DPMPP2SAncestral>;

/// A named solver: tstitch's name (the command line's), the diffusers class it reproduces, the
/// k-diffusion function and stable-diffusion.cpp sampler users know it by ("-" where none exists),
/// and how to make it with diffusers' default options.
struct SolverName {
  std::string_view name;
  std::string_view diffusers;
  std::string_view k_diffusion;
  std::string_view sd_cpp;
  AnySolver (*make)();
};

/// Every named solver; some names select a variant of a class (dpm++2m_sde).
inline constexpr std::array solver_names{
    SolverName{"ddim", "DDIMScheduler", "-", "ddim_trailing (trailing spacing)",
               [] { return AnySolver(DDIM{}); }},
    SolverName{"ddpm", "DDPMScheduler", "-", "-", [] { return AnySolver(DDPM{}); }},
    SolverName{"euler", "EulerDiscreteScheduler", "sample_euler", "euler",
               [] { return AnySolver(Euler{}); }},
    SolverName{"euler_a", "EulerAncestralDiscreteScheduler", "sample_euler_ancestral", "euler_a",
               [] { return AnySolver(EulerAncestral{}); }},
    SolverName{"heun", "HeunDiscreteScheduler", "sample_heun", "heun",
               [] { return AnySolver(Heun{}); }},
    SolverName{"dpm++2m", "DPMSolverMultistepScheduler", "sample_dpmpp_2m", "dpm++2m",
               [] { return AnySolver(DPMSolverMultistep{}); }},
    SolverName{"dpm++2m_sde", "DPMSolverMultistepScheduler (algorithm_type sde-dpmsolver++)",
               "sample_dpmpp_2m_sde", "-",
               [] {
                 DPMSolverMultistepOptions sde;
                 sde.algorithm = DPMSolverAlgorithm::sde_dpmsolver_pp;
                 return AnySolver(DPMSolverMultistep(sde));
               }},
    SolverName{"dpm++2s", "DPMSolverSinglestepScheduler", "-", "-",
               [] { return AnySolver(DPMSolverSinglestep{}); }},
    SolverName{"dpm++2s_a", "-", "sample_dpmpp_2s_ancestral", "dpm++2s_a",
               [] { return AnySolver(DPMPP2SAncestral{}); }},
    SolverName{"unipc", "UniPCMultistepScheduler", "-", "-", [] { return AnySolver(UniPC{}); }},
    SolverName{"lcm", "LCMScheduler", "sample_lcm", "lcm", [] { return AnySolver(LCM{}); }},
    SolverName{"kdpm2", "KDPM2DiscreteScheduler", "sample_dpm_2", "dpm2",
               [] { return AnySolver(KDPM2{}); }},
    SolverName{"kdpm2_a", "KDPM2AncestralDiscreteScheduler", "sample_dpm_2_ancestral", "-",
               [] { return AnySolver(KDPM2Ancestral{}); }},
    SolverName{"lms", "LMSDiscreteScheduler", "sample_lms", "-", [] { return AnySolver(LMS{}); }},
    SolverName{"deis", "DEISMultistepScheduler", "-", "-", [] { return AnySolver(DEIS{}); }},
    SolverName{"pndm", "PNDMScheduler", "- (CompVis: PLMS)", "-", [] { return AnySolver(PNDM{}); }},
    SolverName{"plms", "PNDMScheduler (skip_prk_steps, Stable Diffusion's)", "-", "-",
               [] {
                 PNDMOptions plms;
                 plms.skip_prk_steps = true;
                 return AnySolver(PNDM(plms));
               }},
    SolverName{"ipndm", "IPNDMScheduler (on IPNDMSchedule)", "-", "-",
               [] { return AnySolver(IPNDM{}); }},
    SolverName{"tcd", "TCDScheduler (on TCDSchedule)", "-", "tcd", [] { return AnySolver(TCD{}); }},
    SolverName{"cm", "CMStochasticIterativeScheduler (on CMKarrasSchedule)", "-", "-",
               [] { return AnySolver(CMStochasticIterative{}); }},
};

/// "ddim, ddpm, ...": the names, for help texts and error messages.
[[nodiscard]] inline std::string solver_name_list() {
  std::string out;
  for (const SolverName& s : solver_names) {
    if (!out.empty())
      out += ", ";
    out += s.name;
  }
  return out;
}

/// The solver called `name` (see solver_names), with diffusers' default options. An unknown name
/// is an error that lists the known ones.
[[nodiscard]] inline AnySolver make_solver(std::string_view name) {
  for (const SolverName& s : solver_names)
    if (s.name == name)
      return s.make();
  throw_invalid_argument("solver", std::string(name),
                         detail::concat("must be one of ", solver_name_list()));
}

} // namespace tstitch
