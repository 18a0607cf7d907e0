#!/usr/bin/env node
// Node.js reference client of a genretag contract-v2 ONNX model: WAV -> top 3 genres.
//
//   npm ci                      # onnxruntime-node, pinned in package.json / package-lock.json
//                               # (offline or behind a proxy: ONNXRUNTIME_NODE_INSTALL=skip
//                               #  ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm ci; the CPU binaries ship in the package)
//   node genretag_reference.mjs track.wav [more.wav ...] [--top 3] [--max-windows 20] [--json] [--model-dir DIR]
//
// The model takes waveforms and holds the whole preprocessing, so this file computes no spectrogram.
// onnxruntime-node cannot read the model's custom metadata: labels come from labels.json, the rate,
// window length and scoring settings from scoring.json. It reads WAV (PCM 16/24/32-bit or IEEE
// float) at any sample rate and resamples to the model's with a windowed-sinc interpolator (below;
// genretag_reference.py uses python-soxr, so probabilities of resampled files agree closely, not
// bit for bit). Same steps as genretag's tagger: downmix to mono (mean of the channels), resample,
// whole 3-s windows evenly spaced (at most max_windows), silent windows skipped (all zero, or RMS
// below silence_rms_dbfs), mean of the windows' probabilities, then the calibrated track confidence
// softmax(log(max(mean, 1e-12)) / track_temperature) (scoring.json; genretag's track_probabilities in
// genretag.onnx.contract, mirrored by trackProbabilities below). --json prints the same fields as
// genretag_reference.py --json: {"file", "windows", "genre", "unknown", "unknown_score", "top": [{"genre", "probability"}], "probabilities"}.
// A model with an out-of-taxonomy score (scoring.json "unknown"): the track embedding is the mean of the windows'
// "embedding" output; its score is 1 - cos to the k-th nearest row of unknown.bank (base64 float32 [bank_tracks,
// dimension], L2-normalised train-track embeddings); above the threshold the track is "unknown" (its top genres are
// still reported; never write "unknown" as a genre). genretag's OpenSet.track_score, mirrored here.

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ort from "onnxruntime-node";

const HERE = dirname(fileURLToPath(import.meta.url));
const INPUT_NAME = "waveform";
const OUTPUT_NAME = "probabilities";
const EMBEDDING_NAME = "embedding";
const UNKNOWN = "unknown";

// scoring.json's "unknown" record with its bank decoded: { threshold, neighbours, rows, dimension, bank: Float64Array }.
function openSet(record) {
  if (!record || !record.bank || record.threshold === null || record.threshold === undefined) return null;
  const bytes = Buffer.from(record.bank, "base64");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bank = new Float64Array(bytes.byteLength / 4);
  for (let index = 0; index < bank.length; index++) bank[index] = view.getFloat32(4 * index, true);
  if (bank.length !== record.bank_tracks * record.dimension) throw new Error(`scoring.json: unknown.bank is not ${record.bank_tracks} x ${record.dimension}`);
  return { threshold: record.threshold, neighbours: record.neighbours ?? 1, rows: record.bank_tracks, dimension: record.dimension, bank };
}

// 1 - cos of a track embedding (Float64Array [D]) to the k-th nearest bank row.
function openSetScore(unknown, embedding) {
  const norm = Math.max(Math.sqrt(embedding.reduce((sum, value) => sum + value * value, 0)), 1e-12);
  const similarity = new Float64Array(unknown.rows);
  for (let row = 0; row < unknown.rows; row++) {
    let dot = 0;
    for (let column = 0; column < unknown.dimension; column++) dot += unknown.bank[row * unknown.dimension + column] * embedding[column];
    similarity[row] = dot / norm;
  }
  similarity.sort();
  return 1 - similarity[unknown.rows - Math.min(unknown.neighbours, unknown.rows)];
}

export async function loadModel(folder = HERE) {
  const labels = JSON.parse(readFileSync(join(folder, "labels.json"), "utf8"));
  const scoring = JSON.parse(readFileSync(join(folder, "scoring.json"), "utf8"));
  const session = await ort.InferenceSession.create(join(folder, "model.onnx"), { executionProviders: ["cpu"] });
  if (session.inputNames[0] !== INPUT_NAME || !session.outputNames.includes(OUTPUT_NAME)) {
    throw new Error(`${join(folder, "model.onnx")}: not a genretag contract-v2 model (input ${session.inputNames})`);
  }
  return {
    session,
    labels,
    sampleRate: scoring.sample_rate,
    clipSamples: scoring.clip_samples,
    maxWindows: scoring.max_windows ?? 0,
    silenceRmsDbfs: scoring.silence_rms_dbfs ?? -60.0,
    maxClipsPerRun: scoring.max_clips_per_run ?? 0,
    trackTemperature: scoring.track_temperature ?? 1.0,
    unknown: session.outputNames.includes(EMBEDDING_NAME) ? openSet(scoring.unknown) : null,
  };
}

// Mono Float32Array and the rate of a RIFF/WAVE file (samples scaled as libsndfile does: x / 2^(bits-1)).
export function readWav(path) {
  const bytes = readFileSync(path);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (offset) => bytes.toString("latin1", offset, offset + 4);
  if (bytes.length < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error(`not a RIFF/WAVE file`);
  let format = null;
  let data = null;
  for (let offset = 12; offset + 8 <= bytes.length; ) {
    const size = view.getUint32(offset + 4, true);
    if (tag(offset) === "fmt ") {
      let code = view.getUint16(offset + 8, true);
      if (code === 0xfffe) code = view.getUint16(offset + 32, true); // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID
      format = { code, channels: view.getUint16(offset + 10, true), rate: view.getUint32(offset + 12, true), bits: view.getUint16(offset + 22, true) };
    } else if (tag(offset) === "data") {
      data = { start: offset + 8, size: Math.min(size, bytes.length - offset - 8) };
    }
    offset += 8 + size + (size % 2);
  }
  if (!format || !data) throw new Error(`WAV without fmt or data chunk`);
  const { code, channels, rate, bits } = format;
  const width = bits / 8;
  const read = {
    "1:16": (at) => view.getInt16(at, true) / 32768,
    "1:24": (at) => ((view.getUint8(at) | (view.getUint8(at + 1) << 8) | (view.getInt8(at + 2) << 16))) / 8388608,
    "1:32": (at) => view.getInt32(at, true) / 2147483648,
    "3:32": (at) => view.getFloat32(at, true),
    "3:64": (at) => view.getFloat64(at, true),
  }[`${code}:${bits}`];
  if (!read) throw new Error(`unsupported WAV encoding (format ${code}, ${bits} bits)`);
  const frames = Math.floor(data.size / (width * channels));
  const mono = new Float32Array(frames);
  for (let frame = 0; frame < frames; frame++) {
    let sum = 0;
    for (let channel = 0; channel < channels; channel++) {
      sum = Math.fround(sum + Math.fround(read(data.start + (frame * channels + channel) * width)));
    }
    mono[frame] = channels > 1 ? Math.fround(sum / channels) : sum;
  }
  return { samples: mono, rate };
}

// Band-limited resampling by windowed-sinc interpolation (J. O. Smith, "Digital Audio Resampling Home Page",
// ccrma.stanford.edu/~jos/resample): each output sample is the input convolved with a sinc low-pass at
// ROLLOFF x the lower of the two Nyquist frequencies, Kaiser-windowed (beta 8.6, about 80 dB stop band) over
// ZEROS zero crossings each side, read from a table oversampled OVERSAMPLE times with linear interpolation.
// Float32Array in, Float32Array of round(length * toRate / fromRate) samples out (soxr's length).
const ZEROS = 32;
const OVERSAMPLE = 512;
const KAISER_BETA = 8.6;
const ROLLOFF = 0.95;

function besselI0(x) {
  let sum = 1;
  let term = 1;
  for (let k = 1; k < 64 && term > 1e-16 * sum; k++) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
  }
  return sum;
}

let sincTable = null;
function kernelTable() {
  if (sincTable) return sincTable;
  sincTable = new Float64Array(ZEROS * OVERSAMPLE + 2);
  const norm = besselI0(KAISER_BETA);
  for (let i = 0; i <= ZEROS * OVERSAMPLE; i++) {
    const x = i / OVERSAMPLE;
    const r = x / ZEROS;
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    sincTable[i] = sinc * besselI0(KAISER_BETA * Math.sqrt(Math.max(0, 1 - r * r))) / norm;
  }
  return sincTable;
}

export function resample(samples, fromRate, toRate) {
  if (fromRate === toRate) return samples;
  if (!(fromRate > 0 && toRate > 0)) throw new Error(`cannot resample from ${fromRate} Hz to ${toRate} Hz`);
  const table = kernelTable();
  const scale = Math.min(1, toRate / fromRate) * ROLLOFF; // cut-off in cycles per input sample x 2
  const halfWidth = ZEROS / scale; // input samples each side
  const step = fromRate / toRate;
  const out = new Float32Array(Math.round((samples.length * toRate) / fromRate));
  for (let n = 0; n < out.length; n++) {
    const t = n * step;
    const first = Math.max(0, Math.ceil(t - halfWidth));
    const last = Math.min(samples.length - 1, Math.floor(t + halfWidth));
    let sum = 0;
    for (let k = first; k <= last; k++) {
      const position = Math.abs(t - k) * scale * OVERSAMPLE;
      const index = Math.floor(position);
      sum += samples[k] * (table[index] + (position - index) * (table[index + 1] - table[index]));
    }
    out[n] = sum * scale;
  }
  return out;
}

// numpy's round(): halves go to the even neighbour.
function roundHalfEven(value) {
  const floor = Math.floor(value);
  const rest = value - floor;
  if (rest !== 0.5) return Math.round(value);
  return floor % 2 === 0 ? floor : floor + 1;
}

// Start offsets of whole windows, evenly spaced when more than maxWindows (genretag.spectrogram.window_starts).
export function windowStarts(nSamples, clipSamples, maxWindows) {
  const count = Math.floor(nSamples / clipSamples);
  let indices = Array.from({ length: count }, (_, i) => i);
  if (maxWindows && count > maxWindows) {
    const step = (count - 1) / (maxWindows - 1);
    indices = Array.from({ length: maxWindows }, (_, i) => (i === maxWindows - 1 ? count - 1 : roundHalfEven(i * step)));
  }
  return indices.map((index) => index * clipSamples);
}

function isSilent(window, silenceRmsDbfs) {
  let squares = 0;
  let peak = 0;
  for (const sample of window) {
    squares += sample * sample;
    peak = Math.max(peak, Math.abs(sample));
  }
  const rms = Math.sqrt(squares / window.length);
  return peak === 0 || 20 * Math.log10(Math.max(rms, 1e-10)) < silenceRmsDbfs;
}

// Track probabilities of a WAV file at any rate (resampled to the model's): mean of the windows', then the track
// temperature; and its out-of-taxonomy score (null: none).
export async function scoreFile(model, path, maxWindows = model.maxWindows) {
  const decoded = readWav(path);
  if (decoded.samples.some((sample) => !Number.isFinite(sample))) throw new Error(`non-finite samples (NaN or infinity)`);
  const samples = resample(decoded.samples, decoded.rate, model.sampleRate);
  const windows = windowStarts(samples.length, model.clipSamples, maxWindows)
    .map((start) => samples.subarray(start, start + model.clipSamples))
    .filter((window) => !isSilent(window, model.silenceRmsDbfs));
  if (windows.length === 0) {
    const reason = samples.length < model.clipSamples ? `shorter than one ${model.clipSamples / model.sampleRate}-s window` : "silent";
    throw new Error(`audio ${reason}`);
  }
  const step = model.maxClipsPerRun || windows.length;
  const mean = new Float64Array(model.labels.length);
  const names = model.unknown ? [OUTPUT_NAME, EMBEDDING_NAME] : [OUTPUT_NAME];
  const embedding = model.unknown ? new Float64Array(model.unknown.dimension) : null;
  for (let first = 0; first < windows.length; first += step) {
    const chunk = windows.slice(first, first + step);
    const batch = new Float32Array(chunk.length * model.clipSamples);
    chunk.forEach((window, index) => batch.set(window, index * model.clipSamples));
    const input = new ort.Tensor("float32", batch, [chunk.length, model.clipSamples]);
    const outputs = await model.session.run({ [INPUT_NAME]: input }, names);
    const output = outputs[OUTPUT_NAME].data;
    for (let index = 0; index < output.length; index++) mean[index % model.labels.length] += output[index] / windows.length;
    if (model.unknown) {
      const rows = outputs[EMBEDDING_NAME].data;
      for (let index = 0; index < rows.length; index++) embedding[index % model.unknown.dimension] += rows[index] / windows.length;
    }
  }
  const score = model.unknown ? openSetScore(model.unknown, embedding) : null;
  return { probabilities: trackProbabilities(mean, model.trackTemperature), windows: windows.length, unknownScore: score,
    unknown: model.unknown ? score > model.unknown.threshold : false };
}

// softmax(log(max(mean, 1e-12)) / temperature) of the mean window probabilities: the calibrated track probabilities.
export function trackProbabilities(mean, temperature = 1.0) {
  const scaled = Array.from(mean, (p) => Math.log(Math.max(p, 1e-12)) / temperature);
  const top = Math.max(...scaled);
  const exp = scaled.map((value) => Math.exp(value - top));
  const total = exp.reduce((sum, value) => sum + value, 0);
  return Float64Array.from(exp, (value) => value / total);
}

export function top(model, probabilities, k = 3) {
  return [...probabilities.keys()]
    .sort((a, b) => probabilities[b] - probabilities[a] || a - b)
    .slice(0, k)
    .map((index) => [model.labels[index], probabilities[index]]);
}

const USAGE = `usage: node genretag_reference.mjs FILE.wav [...] [--top 3] [--max-windows N] [--json] [--model-dir DIR]

Tag WAV files (PCM 16/24/32-bit or float, any rate and channels) with a genretag ONNX model.
  --top K          genres per file (default 3)
  --max-windows N  3-s windows per file, evenly spaced; 0: every window (default: scoring.json)
  --json           one JSON object per file: {"file", "windows", "genre", "unknown", "unknown_score", "top": [...], "probabilities"}
  --model-dir DIR  folder with model.onnx, labels.json and scoring.json (default: this file's)
  -h, --help       this text
Other formats: convert to WAV first, e.g. ffmpeg -i in.mp3 out.wav`;

async function main(argv) {
  const options = { top: 3, maxWindows: undefined, json: false, modelDir: HERE };
  const files = [];
  const valueOf = (i, name) => {
    if (i >= argv.length) throw new Error(`${name} needs a value`);
    return argv[i];
  };
  try {
    for (let i = 0; i < argv.length; i++) {
      const arg = argv[i];
      if (arg === "-h" || arg === "--help") {
        console.log(USAGE);
        return 0;
      } else if (arg === "--top") options.top = Number(valueOf(++i, arg));
      else if (arg === "--max-windows") options.maxWindows = Number(valueOf(++i, arg));
      else if (arg === "--model-dir") options.modelDir = valueOf(++i, arg);
      else if (arg === "--json") options.json = true;
      else if (arg === "--") {
        files.push(...argv.slice(i + 1));
        break;
      }
      else if (arg.startsWith("-")) throw new Error(`unknown option ${arg}`);
      else files.push(arg);
    }
  } catch (error) {
    console.error(`${error.message}\n${USAGE}`);
    return 2;
  }
  if (files.length === 0) {
    console.error(USAGE);
    return 2;
  }
  const model = await loadModel(options.modelDir);
  let failed = 0;
  for (const file of files) {
    try {
      const { probabilities, windows, unknownScore, unknown } = await scoreFile(model, file, options.maxWindows ?? model.maxWindows);
      const ranked = top(model, probabilities, options.top);
      const genre = unknown ? UNKNOWN : ranked[0][0];
      if (options.json) {
        const all = Object.fromEntries(model.labels.map((label, index) => [label, probabilities[index]]));
        console.log(JSON.stringify({ file, windows, genre, unknown, unknown_score: unknownScore,
          top: ranked.map(([genre, probability]) => ({ genre, probability })), probabilities: all }));
      } else {
        const prefix = unknown ? `${UNKNOWN} (none of these genres; score ${unknownScore.toPrecision(4)}), ` : "";
        console.log(`${file}: ${prefix}${ranked.map(([genre, probability]) => `${genre} ${probability.toFixed(3)}`).join(", ")}`);
      }
    } catch (error) {
      console.error(`${file}: error: ${error.message}`);
      failed += 1;
    }
  }
  return failed ? 1 : 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = await main(process.argv.slice(2));
}
