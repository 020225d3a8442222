// SPDX-License-Identifier: Apache-2.0
// from_diffusers_config: the scheduler_config.json files of real pipelines (tests/data/diffusers)
// give diffusers' timesteps, sigmas and full-loop result (docs/parity.md §7; the expected values
// come from tools/diffusers_oracles.py with diffusers 0.31.0), and every key is either honoured or
// refused by name.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <string>
#include <variant>
#include <vector>

#include "tstitch/diffusers/scheduler_config.hpp"
#include "tstitch/sample.hpp"

#include "support/diffusers_harness.hpp"

using namespace tstitch;
using namespace tstitch::testing;

namespace {

std::string config_path(const char* name) {
  return (std::filesystem::path(TSTITCH_TEST_DATA_DIR) / "diffusers" / name).string();
}

/// What tools/diffusers_oracles.py prints for a config (10 steps).
struct Oracle {
  std::vector<double> timesteps;
  std::vector<double> ve_sigmas; ///< of the n points (and the final one where diffusers keeps it)
  int loop_steps;
  double sum, mean;
};

/// Checks a loaded config against diffusers: timesteps exactly, VE sigmas to float32 rounding,
/// and the harness full loop to diffusers' test tolerances (1e-2 on the sum, 1e-3 on the mean).
void check_against(const DiffusersScheduler& loaded, const Oracle& oracle) {
  const Trajectory trajectory = loaded.schedule.trajectory(10);
  REQUIRE(trajectory.steps() == 10);
  for (std::size_t i = 0; i < oracle.timesteps.size() && i < 10; ++i) {
    INFO("point " << i);
    CHECK(trajectory.points[i].timestep == Approx(oracle.timesteps[i]).epsilon(1e-7));
  }
  for (std::size_t i = 0; i < oracle.ve_sigmas.size() && i < 11; ++i) {
    INFO("point " << i);
    CHECK(trajectory.points[i].ve_sigma() == Approx(oracle.ve_sigmas[i]).epsilon(1e-6));
  }
  const Tensor x = std::visit(
      [&](auto solver) {
        Tensor latents = harness_tensor(false);
        auto model = harness_model(loaded.prediction);
        SampleOptions options;
        options.steps = oracle.loop_steps;
        sample(model, loaded.schedule, solver, latents, NoCondition{}, options);
        return latents;
      },
      loaded.solver);
  const Result r = abs_sum(x);
  INFO(std::setprecision(10) << "sum " << r.sum << ", mean " << r.mean);
  CHECK(std::abs(r.sum - oracle.sum) < 1e-2);
  CHECK(std::abs(r.mean - oracle.mean) < 1e-3);
}

} // namespace

TEST_CASE("Stable Diffusion 1.5's PNDM config (skip_prk_steps) gives diffusers' run",
          "[parity][config]") {
  const DiffusersScheduler s = from_diffusers_config(config_path("sd15_pndm.json"));
  REQUIRE(std::holds_alternative<PNDM>(s.solver));
  CHECK(std::get<PNDM>(s.solver).options().skip_prk_steps);
  // PLMS evaluates the first timestep twice (901, 801, 801, 701, ...): the trajectory's points
  // are the distinct ones, the final point is timestep 0 (set_alpha_to_one false).
  check_against(s, {{901, 801, 701, 601, 501, 401, 301, 201, 101, 1},
                    {8.390686923364788, 5.134433018322688, 3.3477646046681673, 2.2928546570838084,
                     1.6236928689440773, 1.1682164793009746, 0.8356532795969402, 0.5740507469627445,
                     0.34618728443170954, 0.04131447785534563},
                    10,
                    201.3864250180195,
                    0.26222190757554625});
}

TEST_CASE("Stable Diffusion 2.1's DDIM config (v-prediction) gives diffusers' run",
          "[parity][config]") {
  const DiffusersScheduler s = from_diffusers_config(config_path("sd21_ddim_v.json"));
  CHECK(s.class_name == "DDIMScheduler");
  CHECK(s.prediction == Prediction::v);
  REQUIRE(std::holds_alternative<DDIM>(s.solver));
  CHECK(!std::get<DDIM>(s.solver).options().clip_sample);
  CHECK(s.ignored == std::vector<std::string>{"skip_prk_steps"}); // a PNDM key; diffusers too
  check_against(s, {{901, 801, 701, 601, 501, 401, 301, 201, 101, 1},
                    {8.390686923364788, 5.134433018322688, 3.3477646046681673, 2.2928546570838084,
                     1.6236928689440773, 1.1682164793009746, 0.8356532795969402, 0.5740507469627445,
                     0.34618728443170954, 0.04131447785534563},
                    10,
                    69.59649244508182,
                    0.0906204328712003});
}

TEST_CASE("Stable Diffusion XL's Euler config (leading, steps_offset 1) gives diffusers' run",
          "[parity][config]") {
  const DiffusersScheduler s = from_diffusers_config(config_path("sdxl_euler.json"));
  REQUIRE(std::holds_alternative<Euler>(s.solver));
  check_against(s, {{901, 801, 701, 601, 501, 401, 301, 201, 101, 1},
                    {8.390686988830566, 5.134433269500732, 3.347764492034912, 2.2928547859191895,
                     1.6236928701400757, 1.1682164669036865, 0.8356532454490662, 0.5740507245063782,
                     0.3461872935295105, 0.04131447896361351, 0.0},
                    10,
                    180.64839646517066,
                    0.23521926623069098});
}

TEST_CASE("Stable Diffusion 1.5's DPM-Solver++ config (multistep leading) gives diffusers' run",
          "[parity][config]") {
  const DiffusersScheduler s = from_diffusers_config(config_path("sd15_dpm_solver.json"));
  REQUIRE(std::holds_alternative<DPMSolverMultistep>(s.solver));
  CHECK(std::get<DPMSolverMultistep>(s.solver).options() == DPMSolverMultistepOptions{});
  check_against(s, {{901, 811, 721, 631, 541, 451, 361, 271, 181, 91},
                    {8.390686923364788, 5.37633654698958, 3.630654376027841, 2.5576645482673963,
                     1.8585613093855702, 1.376179515050511, 1.023925699304354, 0.751508949918151,
                     0.5269757530060989, 0.3235332277711455},
                    10,
                    185.6731346422457,
                    0.24176189406542412});
  // The 20-step run a user of the pipeline gets: DPM's formula, not DDIM's 951, 901, ..., 1.
  const std::vector<double> twenty = [&] {
    std::vector<double> t;
    for (const TimePoint& p : s.schedule.trajectory(20).points)
      t.push_back(p.timestep);
    return t;
  }();
  CHECK(twenty == std::vector<double>{941, 894, 847, 800, 753, 706, 659, 612, 565, 518, 471,
                                      424, 377, 330, 283, 236, 189, 142, 95,  48,  0});
}

TEST_CASE("A KDPM2 config with karras sigmas gives diffusers' run", "[parity][config]") {
  const DiffusersScheduler s = from_diffusers_config(config_path("kdpm2_karras.json"));
  REQUIRE(std::holds_alternative<KDPM2>(s.solver));
  // diffusers interleaves the midpoints into its lists; these are the points of the trajectory.
  check_against(s, {{999, 916, 815, 687, 523, 327, 146, 41, 7, 0},
                    {14.614645004272461, 9.102935791015625, 5.478400707244873, 3.1686108112335205,
                     1.7494229078292847, 0.9140763878822327, 0.44692087173461914,
                     0.20139984786510468, 0.08191104978322983, 0.029167532920837402, 0.0},
                    10,
                    209.79568003915483,
                    0.27317145838431617});
}

TEST_CASE("An LCM config gives diffusers' timesteps and one-step result", "[parity][config]") {
  const DiffusersScheduler s = from_diffusers_config(config_path("lcm_dreamshaper_v7.json"));
  REQUIRE(std::holds_alternative<LCM>(s.solver));
  // Multistep LCM draws torch noise between steps, so the full loop is compared at one step.
  check_against(s, {{999, 899, 799, 699, 599, 499, 399, 299, 199, 99},
                    {14.614645157713948, 8.302805221761718, 5.0877649634060385, 3.3210843799436556,
                     2.2764638827542734, 1.6128869617694586, 1.1605788108934965, 0.8298599538559597,
                     0.5692853579594492, 0.3416744165181133},
                    1,
                    18.70967684963398,
                    0.02436155839796091});
}

TEST_CASE("A DDIMInverseScheduler config inverts as diffusers does (diffusers 0.31.0)",
          "[parity][config]") {
  const DiffusersScheduler s = from_diffusers_config(R"({"_class_name": "DDIMInverseScheduler",
      "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
      "clip_sample": false, "set_alpha_to_one": false, "steps_offset": 1})");
  REQUIRE(std::holds_alternative<DDIM>(s.solver));
  const Trajectory trajectory = s.schedule.trajectory(10);
  for (int i = 0; i < 10; ++i) // the model times, cleanest first
    CHECK(trajectory[i].timestep == 1 + 100 * i);
  Tensor x = harness_tensor(false);
  auto model = harness_model(s.prediction);
  SampleOptions options;
  options.steps = 10;
  DDIM solver = std::get<DDIM>(s.solver);
  sample(model, s.schedule, solver, x, NoCondition{}, options);
  const Result r = abs_sum(x);
  CHECK(std::abs(r.sum - 676.5041321490426) < 1e-2);
  CHECK(std::abs(r.mean - 0.8808647554023992) < 1e-3);
}

TEST_CASE("A DPM-Solver 3S singlestep config gives diffusers' run (diffusers 0.31.0)",
          "[parity][config]") {
  const DiffusersScheduler s = from_diffusers_config(R"({"_class_name":
      "DPMSolverSinglestepScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
      "beta_end": 0.012, "solver_order": 3, "lower_order_final": true})");
  REQUIRE(std::holds_alternative<DPMSolverSinglestep>(s.solver));
  CHECK(std::get<DPMSolverSinglestep>(s.solver).options().solver_order == 3);
  const Tensor x = std::visit(
      [&](auto solver) {
        Tensor latents = harness_tensor(false);
        auto model = harness_model(s.prediction);
        SampleOptions options;
        options.steps = 10;
        sample(model, s.schedule, solver, latents, NoCondition{}, options);
        return latents;
      },
      s.solver);
  const Result r = abs_sum(x);
  CHECK(s.schedule.trajectory(10)[5].timestep == 500);
  CHECK(std::abs(r.sum - 184.58954739326145) < 1e-2);
  CHECK(std::abs(r.mean - 0.2403509731683092) < 1e-3);
}

TEST_CASE("A config may be JSON text, a file or a model folder", "[config]") {
  const DiffusersScheduler text = from_diffusers_config(R"( {"_class_name": "DDIMScheduler",
      "timestep_spacing": "trailing", "clip_sample": false, "lambda_min_clipped": -Infinity} )");
  CHECK(text.ignored == std::vector<std::string>{"lambda_min_clipped"});
  CHECK(text.schedule.trajectory(4).points.front().timestep == 999);

  const auto dir = std::filesystem::temp_directory_path() / "tstitch_config_folder";
  std::filesystem::create_directories(dir / "scheduler");
  std::filesystem::copy_file(config_path("sdxl_euler.json"),
                             dir / "scheduler" / "scheduler_config.json",
                             std::filesystem::copy_options::overwrite_existing);
  CHECK(from_diffusers_config(dir.string()).class_name == "EulerDiscreteScheduler");
  std::filesystem::remove_all(dir);
}

TEST_CASE("Config keys are honoured or refused by name, never ignored silently",
          "[config][errors]") {
  auto error_of = [](const std::string& json) {
    try {
      (void)from_diffusers_config(json);
    } catch (const invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  using Catch::Contains;
  CHECK_THAT(error_of(R"({"_class_name": "FancyScheduler"})"),
             Contains("FancyScheduler") && Contains("DDIMScheduler") &&
                 Contains("DPMSolverMultistepScheduler"));
  CHECK_THAT(error_of(R"({"beta_start": 0.001})"), Contains("_class_name"));
  CHECK_THAT(error_of(R"({"_class_name": "DDIMScheduler", "beta_strat": 0.001})"),
             Contains("beta_strat = 0.001") && Contains("not a key of any diffusers scheduler"));
  CHECK_THAT(
      error_of(R"({"_class_name": "HeunDiscreteScheduler", "rescale_betas_zero_snr": true})"),
      Contains("rescale_betas_zero_snr = true"));
  CHECK_THAT(error_of(R"({"_class_name": "DDIMScheduler", "timestep_spacing": "cosine"})"),
             Contains("timestep_spacing = \"cosine\"") && Contains("leading, trailing, linspace"));
  CHECK_THAT(error_of(R"({"_class_name": "DDIMScheduler", "steps_offset": "1"})"),
             Contains("steps_offset = \"1\"") && Contains("integer"));
  CHECK_THAT(error_of(R"({"_class_name": "DPMSolverMultistepScheduler",
                          "algorithm_type": "dpmsolver"})"),
             Contains("final_sigmas_type = zero"));
  CHECK_THAT(error_of(R"({"_class_name": "DPMSolverMultistepScheduler",
                          "algorithm_type": "dpm-solver"})"),
             Contains("algorithm_type = \"dpm-solver\""));
  CHECK_THAT(error_of(R"({"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3,
                          "algorithm_type": "sde-dpmsolver++"})"),
             Contains("solver_order = 3") && Contains("sde-dpmsolver++"));
  CHECK_THAT(error_of(R"({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": true,
                          "timestep_spacing": "leading"})"),
             Contains("timestep_spacing = leading") && Contains("karras"));
  CHECK_THAT(error_of(R"({"_class_name": "EulerDiscreteScheduler",
                          "interpolation_type": "cubic"})"),
             Contains("interpolation_type = \"cubic\""));
  CHECK_THAT(error_of(R"({"_class_name": "UniPCMultistepScheduler", "predict_x0": false,
                          "thresholding": true})"),
             Contains("predict_x0"));
  CHECK_THAT(error_of(R"({"_class_name": "UniPCMultistepScheduler", "solver_p": {}})"),
             Contains("solver_p"));
  CHECK_THAT(error_of(R"({"_class_name": "DDIMScheduler", "trained_betas": [0.1, "x"]})"),
             Contains("trained_betas"));
  CHECK_THAT(error_of(R"({"_class_name": "DDIMScheduler", "beta_end": 2.0})"),
             Contains("beta_end = 2"));
  CHECK_THAT(error_of(R"({"_class_name": "DDIMScheduler", "steps_offset": 18446744073709551615})"),
             Contains("steps_offset = 18446744073709551615") && Contains("32 bits"));
  CHECK_THAT(error_of(R"({"_class_name": "DDIMScheduler", "num_train_timesteps": 2000000000})"),
             Contains("num_train_timesteps = 2000000000"));
  CHECK_THAT(error_of(R"({"_class_name": "DDIMScheduler", "steps_offset": 2147483000})"),
             Contains("steps_offset = 2147483000"));
  CHECK_THAT(error_of("{\"_class_name\": \"DDIMScheduler\", \"x\": " + std::string(100000, '[') +
                      std::string(100000, ']') + "}"),
             Contains("nests deeper than 32 levels"));
  CHECK_THAT(error_of(R"({"_class_name": "UniPCMultistepScheduler", "use_flow_sigmas": true})"),
             Contains("use_flow_sigmas = true"));
  CHECK_THAT(error_of("[1, 2]"), Contains("not a JSON object"));
  CHECK_THAT(error_of("{\"_class_name\": "), Contains("not a JSON object"));
  CHECK_THAT(error_of("/nonexistent/scheduler_config.json"), Contains("no such file"));
}

TEST_CASE("A FIFO given as a config is refused before it is opened", "[config][errors]") {
  const auto fifo = std::filesystem::temp_directory_path() / "tstitch_config_fifo";
  std::filesystem::remove(fifo);
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(from_diffusers_config(fifo.string()), Catch::Contains("not a regular file"));
  std::filesystem::remove(fifo);
}

TEST_CASE("Configs load into the solver and options diffusers' keys describe", "[config]") {
  const DiffusersScheduler dpm = from_diffusers_config(R"({"_class_name":
      "DPMSolverMultistepScheduler", "solver_order": 2, "algorithm_type": "sde-dpmsolver++",
      "solver_type": "heun", "lower_order_final": false, "euler_at_final": true,
      "thresholding": true, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 2.0,
      "use_karras_sigmas": true, "final_sigmas_type": "sigma_min",
      "prediction_type": "v_prediction", "steps_offset": 0})");
  const DPMSolverMultistepOptions& o = std::get<DPMSolverMultistep>(dpm.solver).options();
  CHECK(o.solver_order == 2);
  CHECK(o.algorithm == DPMSolverAlgorithm::sde_dpmsolver_pp);
  CHECK(o.solver_type == DPMSolverType::heun);
  CHECK(!o.lower_order_final);
  CHECK(o.euler_at_final);
  CHECK(o.thresholding == DynamicThresholding{0.9, 2.0});
  CHECK(dpm.prediction == Prediction::v);

  const DiffusersScheduler ddpm = from_diffusers_config(
      R"({"_class_name": "DDPMScheduler", "variance_type": "learned_range"})");
  CHECK(ddpm.prediction == Prediction::epsilon_learned_sigma);
  CHECK(std::get<DDPM>(ddpm.solver).options().variance == DDPMVariance::learned_range);
  CHECK(std::get<DDPM>(ddpm.solver).options().clip_sample == 1.0f); // DDPM clips by default

  // Names diffusers remaps, remapped the same way.
  const DiffusersScheduler deis_named = from_diffusers_config(
      R"({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "deis",
          "solver_type": "logrho"})");
  CHECK(std::get<DPMSolverMultistep>(deis_named.solver).options() == DPMSolverMultistepOptions{});
  CHECK(std::get<UniPC>(from_diffusers_config(R"({"_class_name": "UniPCMultistepScheduler",
                                                  "solver_type": "midpoint"})")
                            .solver)
            .options()
            .solver_type == UniPCVariant::bh2);
  // diffusers' IPNDM reads the model output as v; DDIMInverse's set_alpha_to_zero may be null.
  CHECK(from_diffusers_config(R"({"_class_name": "IPNDMScheduler"})").prediction == Prediction::v);
  CHECK_NOTHROW(from_diffusers_config(
      R"({"_class_name": "DDIMInverseScheduler", "set_alpha_to_zero": null})"));

  const DiffusersScheduler unipc = from_diffusers_config(
      R"({"_class_name": "UniPCMultistepScheduler", "solver_type": "bh1",
          "disable_corrector": [0, 2], "solver_order": 3})");
  CHECK(std::get<UniPC>(unipc.solver).options().disable_corrector == std::vector<int>{0, 2});
  CHECK(std::get<UniPC>(unipc.solver).options().solver_type == UniPCVariant::bh1);
}
