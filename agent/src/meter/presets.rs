//! Built-in register maps (docs/meters.md cites the manual each comes from).

use crate::config::{DataType, MeterModel, Register, RegisterKind, RegisterMap, WordOrder};

/// The preset register map of a model; `None` for `custom`.
pub fn register_map(model: MeterModel) -> Option<RegisterMap> {
    match model {
        // Eastron SDM120-Modbus: input registers (function 04), IEEE-754 float, big-endian.
        MeterModel::Sdm120 => Some(RegisterMap {
            voltage_v: Some(f32_abcd(RegisterKind::Input, 0x0000, 1.0)), // 30001
            current_a: Some(f32_abcd(RegisterKind::Input, 0x0006, 1.0)), // 30007
            power_w: f32_abcd(RegisterKind::Input, 0x000C, 1.0),         // 30013, W
            energy_kwh: Some(f32_abcd(RegisterKind::Input, 0x0156, 1.0)), // 30343, kWh
        }),
        // Eastron SDM630-Modbus: same layout family, three-phase totals.
        MeterModel::Sdm630 => Some(RegisterMap {
            voltage_v: Some(f32_abcd(RegisterKind::Input, 0x0000, 1.0)), // 30001, phase 1 L-N
            current_a: Some(f32_abcd(RegisterKind::Input, 0x0030, 1.0)), // 30049, sum of line currents
            power_w: f32_abcd(RegisterKind::Input, 0x0034, 1.0), // 30053, total system power, W
            energy_kwh: Some(f32_abcd(RegisterKind::Input, 0x0156, 1.0)), // 30343, kWh
        }),
        // CHINT DDSU666: holding registers (function 03), float, big-endian.
        MeterModel::Ddsu666 => Some(RegisterMap {
            voltage_v: Some(f32_abcd(RegisterKind::Holding, 0x2000, 1.0)), // U, V
            current_a: Some(f32_abcd(RegisterKind::Holding, 0x2002, 1.0)), // I, A
            // P is reported in kW; the agent works in W.
            power_w: f32_abcd(RegisterKind::Holding, 0x2004, 1000.0),
            energy_kwh: Some(f32_abcd(RegisterKind::Holding, 0x4000, 1.0)), // ImpEp, kWh
        }),
        MeterModel::Custom => None,
    }
}

/// The map a meter is read with: its own `registers` if set, else its model's preset.
pub fn effective_map(model: MeterModel, registers: Option<&RegisterMap>) -> Option<RegisterMap> {
    registers.cloned().or_else(|| register_map(model))
}

fn f32_abcd(kind: RegisterKind, address: u16, scale: f64) -> Register {
    Register {
        kind,
        address,
        data_type: DataType::F32,
        word_order: WordOrder::Abcd,
        scale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (kind, address, scale) of power, voltage, current, energy.
    fn layout(map: &RegisterMap) -> Vec<(RegisterKind, u16, f64)> {
        [
            Some(map.power_w),
            map.voltage_v,
            map.current_a,
            map.energy_kwh,
        ]
        .into_iter()
        .map(|r| {
            let r = r.expect("every preset maps all four quantities");
            assert_eq!(
                (r.data_type, r.word_order),
                (DataType::F32, WordOrder::Abcd)
            );
            (r.kind, r.address, r.scale)
        })
        .collect()
    }

    #[test]
    fn sdm120_uses_input_registers_from_the_manual() {
        // Manual register numbers 30013, 30001, 30007, 30343 minus 30001.
        use RegisterKind::Input;
        assert_eq!(
            layout(&register_map(MeterModel::Sdm120).unwrap()),
            [
                (Input, 12, 1.0),
                (Input, 0, 1.0),
                (Input, 6, 1.0),
                (Input, 342, 1.0)
            ]
        );
    }

    #[test]
    fn sdm630_reads_system_totals() {
        // 30053, 30001, 30049, 30343 minus 30001.
        use RegisterKind::Input;
        assert_eq!(
            layout(&register_map(MeterModel::Sdm630).unwrap()),
            [
                (Input, 52, 1.0),
                (Input, 0, 1.0),
                (Input, 48, 1.0),
                (Input, 342, 1.0)
            ]
        );
    }

    #[test]
    fn ddsu666_uses_holding_registers_and_scales_kw_to_w() {
        use RegisterKind::Holding;
        assert_eq!(
            layout(&register_map(MeterModel::Ddsu666).unwrap()),
            [
                (Holding, 0x2004, 1000.0),
                (Holding, 0x2000, 1.0),
                (Holding, 0x2002, 1.0),
                (Holding, 0x4000, 1.0)
            ]
        );
    }

    #[test]
    fn custom_has_no_preset() {
        assert_eq!(register_map(MeterModel::Custom), None);
        assert_eq!(effective_map(MeterModel::Custom, None), None);
    }

    #[test]
    fn a_configured_map_overrides_the_preset() {
        let own = RegisterMap {
            power_w: f32_abcd(RegisterKind::Holding, 100, 1.0),
            voltage_v: None,
            current_a: None,
            energy_kwh: None,
        };
        assert_eq!(effective_map(MeterModel::Sdm120, Some(&own)), Some(own));
        assert_eq!(
            effective_map(MeterModel::Sdm120, None),
            register_map(MeterModel::Sdm120)
        );
    }
}
